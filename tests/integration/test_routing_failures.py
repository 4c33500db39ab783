"""Routing that survives failure: retries, Retry-After, fallbacks, cool-downs, stream safety.

Everything runs through real HTTP against the fake vendors with injected faults; the
gateway's backoff sleep and clock are injected (``gw.sleeps`` records every wait, none
is real), so the suite never waits for a backoff.
"""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import openai
import orjson
import pytest

from tests.fakes.anthropic import error_body as anthropic_error
from tests.fakes.base import Fault
from tests.fakes.gemini import rate_limited as gemini_rate_limited

HI = [{"role": "user", "content": "hi"}]
OA_429 = {"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                    "code": "rate_limit_exceeded"}}
OA_500 = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}


async def post(gw, payload, **kw):
    async with gw.http.post(gw.url + "/v1/chat/completions", json=payload, **kw) as r:
        return r.status, dict(r.headers), await r.read()


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((ev, "\n".join(data)))
    return out


def stream_text(raw: bytes) -> str:
    text = ""
    for ev, data in sse_events(raw):
        if ev is None and data != "[DONE]":
            for ch in orjson.loads(data).get("choices") or []:
                text += ch.get("delta", {}).get("content") or ""
    return text


# ---------------------------------------------------------------- retries and Retry-After
@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "1"}, 1.0),
    ({"retry-after-ms": "250"}, 0.25),
    ({}, 0.1 * (1 - 0.1 * 0.5)),  # computed: INITIAL_BACKOFF 100 ms, jitter 0.1 at draw 0.5
])
async def test_429_waits_as_told_then_succeeds(gateway, vendor_env, fake_openai, headers, expected):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=429, body=OA_429, headers=headers))
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 200
    assert gw.sleeps == [pytest.approx(expected)]
    assert h["X-Gateway-Attempts"] == "2"


async def test_retry_after_http_date(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    fake_openai.inject(Fault(status=429, body=OA_429, headers={"retry-after": when}))
    status, _, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 200
    assert 0.5 < gw.sleeps[0] <= 2.0


async def test_escalating_retry_after_is_reread_each_attempt(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=429, body=OA_429, headers={"retry-after": "0.5"}),
                       Fault(status=429, body=OA_429, headers={"retry-after": "1"}),
                       Fault(status=429, body=OA_429, headers={"retry-after": "1.5"}))
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 200 and gw.sleeps == [0.5, 1.0, 1.5] and h["X-Gateway-Attempts"] == "4"


async def test_retry_after_beyond_cap_moves_to_fallback_without_sleeping(gateway, vendor_env, fake_openai,
                                                                          fake_mistral):
    gw = await gateway(vendor_env)  # MAX_BACKOFF is 2000 ms in the fixture
    fake_openai.inject(Fault(status=429, body=OA_429, headers={"retry-after": "60"}))
    status, h, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI,
                                      "fallbacks": ["mistral-small-latest"]})
    assert status == 200 and gw.sleeps == []
    assert h["X-Gateway-Provider"] == "mistral" and h["X-Gateway-Attempts"] == "2"


async def test_persistent_429_returns_429_with_retry_after(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(*[Fault(status=429, body=OA_429, headers={"retry-after": "1"})] * 4)
    status, h, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 429
    assert h["Retry-After"] == "1"
    err = orjson.loads(body)["error"]
    assert err["type"] == "rate_limit_error" and len(err["attempts"]) == 4
    assert len(fake_openai.requests) == 4  # MAX_RETRIES=3 after the first try
    assert gw.sleeps == [1.0, 1.0, 1.0]


async def test_anthropic_529_overloaded_is_retried(gateway, vendor_env, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_anthropic.inject(Fault(status=529, body=anthropic_error("overloaded_error", "Overloaded")))
    status, h, body = await post(gw, {"model": "claude", "messages": HI})
    assert status == 200 and h["X-Gateway-Attempts"] == "2"
    assert gw.events("attempt")[0]["status"] == 529


async def test_gemini_resource_exhausted_honours_retry_info(gateway, vendor_env, fake_gemini):
    gw = await gateway(vendor_env)
    fake_gemini.inject(Fault(status=429, body=gemini_rate_limited("1.5s")))
    status, _, _ = await post(gw, {"model": "gemini", "messages": HI})
    assert status == 200 and gw.sleeps == [1.5]


async def test_other_4xx_not_retried(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=422, body={"error": {"message": "bad thing", "type": "invalid_request_error"}}))
    status, _, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status == 400 and len(fake_openai.requests) == 1 and gw.sleeps == []


# ---------------------------------------------------------------- transport failures
async def test_connection_refused_falls_back(gateway, vendor_env, fake_mistral):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {**vendor_env, "OPENAI_BASE_URL": f"http://127.0.0.1:{dead}/v1"}
    gw = await gateway(env)
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status == 200 and h["X-Gateway-Provider"] == "mistral"
    assert h["X-Gateway-Attempts"] == "5"  # 1 + 3 retries on the dead route, then the fallback


async def test_hang_past_timeout_moves_on_without_retrying(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway({**vendor_env, "REQUEST_TIMEOUT": "0.3"})
    fake_openai.inject(Fault(hang=True))
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status == 200 and h["X-Gateway-Provider"] == "mistral"
    assert len(fake_openai.requests) == 1 and gw.sleeps == []
    assert gw.events("error")[0]["error_type"] == "upstream_timeout"


async def test_all_timeouts_is_504(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "REQUEST_TIMEOUT": "0.2"})
    fake_openai.inject(Fault(hang=True))
    status, _, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 504
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"


async def test_all_failed_envelope_lists_attempts(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0"})
    fake_openai.inject(Fault(status=500, body=OA_500))
    fake_mistral.inject(Fault(status=503, body={"message": "down"}))
    status, h, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status in (502, 503)
    err = orjson.loads(body)["error"]
    assert [(a["provider"], a["status"]) for a in err["attempts"]] == [("openai", 500), ("mistral", 503)]
    assert err["request_id"] == h["X-Request-ID"] and "Traceback" not in err["message"]
    assert "All 2 upstream attempts failed" in err["message"]


# ---------------------------------------------------------------- non-retryable errors
async def test_context_length_goes_to_a_larger_window(gateway, vendor_env, fake_openai, fake_gemini):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}}))
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI,
                                   "fallbacks": ["mistral-small-latest", "gemini-2.0-flash"]})
    assert status == 200
    assert h["X-Gateway-Provider"] == "gemini"  # mistral's 128k window is no larger: skipped
    assert len(fake_openai.requests) == 1


async def test_context_length_without_larger_target_is_returned(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "maximum context length exceeded", "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}}))
    status, _, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 400 and orjson.loads(body)["error"]["code"] == "context_length_exceeded"
    assert len(fake_openai.requests) == 1


async def test_content_policy_refusal_returned_with_reason(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "Your request was rejected as a result of our safety system.",
        "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}))
    status, _, body = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status == 400
    err = orjson.loads(body)["error"]
    assert err["code"] == "content_policy_violation" and "safety system" in err["message"]
    assert len(fake_openai.requests) == 1


# ---------------------------------------------------------------- health and cool-down
async def test_flapping_provider_served_by_fallback_then_recovers(gateway, vendor_env, fake_openai,
                                                                    fake_mistral):
    # identical requests on purpose: the response cache would answer them (cache tests: test_cache.py)
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0", "CACHE_ENABLED": "false"})
    req = {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]}
    fake_openai.inject(*[Fault(status=500, body=OA_500)] * 3)
    for _ in range(3):  # three failures in a row open the circuit
        status, h, _ = await post(gw, req)
        assert status == 200 and h["X-Gateway-Provider"] == "mistral"
    assert len(fake_openai.requests) == 3
    status, h, _ = await post(gw, req)  # cooling down: the primary is skipped
    assert h["X-Gateway-Provider"] == "mistral" and len(fake_openai.requests) == 3
    gw.advance(31)  # past the cool-down: one probe goes to the primary, which has recovered
    status, h, _ = await post(gw, req)
    assert h["X-Gateway-Provider"] == "openai" and len(fake_openai.requests) == 4
    status, h, _ = await post(gw, req)
    assert h["X-Gateway-Provider"] == "openai"


async def test_auto_skips_cooling_provider(gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0"})
    fake_openai.inject(Fault(status=429, body=OA_429, headers={"retry-after": "20"}))
    status, h, _ = await post(gw, {"model": "auto", "messages": HI})
    assert status == 200 and h["X-Gateway-Provider"] == "anthropic"  # next in text_generation
    status, h, _ = await post(gw, {"model": "auto", "messages": HI})
    assert h["X-Gateway-Provider"] == "anthropic" and len(fake_openai.requests) == 1


# ---------------------------------------------------------------- streams
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


async def test_failure_before_first_byte_is_retried_invisibly(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "STREAM_FIRST_TOKEN_TIMEOUT": "0.3"})
    fake_openai.inject(Fault(status=500, body=OA_500), Fault(stall_after=1))
    status, h, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"], **STREAM})
    assert status == 200
    assert stream_text(raw) == "Hello from fake OpenAI." or stream_text(raw) == "Bonjour from fake Mistral."
    assert sse_events(raw)[-1] == (None, "[DONE]")
    assert all(ev != "error" for ev, _ in sse_events(raw))


async def test_cut_stream_continued_with_prefill(gateway, vendor_env, fake_mistral, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_mistral.text = "one two three four five six"
    fake_mistral.inject(Fault(cut_after=3))  # role, "one ", "two " reach the client
    fake_anthropic.inject(Fault(text="three four five six"))
    status, h, raw = await post(gw, {"model": "mistral-small-latest", "messages": HI,
                                     "fallbacks": ["claude-3-5-haiku-latest"], **STREAM})
    assert status == 200
    assert stream_text(raw) == "one two three four five six"
    assert fake_anthropic.prefills == ["one two"]  # trailing whitespace is not allowed there
    assert sse_events(raw)[-1] == (None, "[DONE]")
    usage = orjson.loads(sse_events(raw)[-2][1])["usage"]
    assert usage["completion_tokens"] > 0 and usage["cost"] > 0
    roles = [ch.get("delta", {}).get("role") for ev, d in sse_events(raw) if ev is None and d != "[DONE]"
             for ch in orjson.loads(d).get("choices") or []]
    assert roles.count("assistant") == 1
    assert gw.events("response")[-1]["estimated"] is True  # the cut segment's usage is estimated


async def test_cut_stream_continued_fresh_when_no_prefill(gateway, vendor_env, fake_mistral, fake_openai):
    gw = await gateway(vendor_env)
    fake_mistral.text = fake_openai.text = "alpha beta gamma delta epsilon"
    fake_mistral.inject(Fault(cut_after=3))
    status, _, raw = await post(gw, {"model": "mistral-small-latest", "messages": HI,
                                     "fallbacks": ["gpt-4o-mini"], **STREAM})
    assert stream_text(raw) == "alpha beta gamma delta epsilon"
    assert fake_openai.last.body["messages"] == HI  # a fresh answer, no prefix sent
    assert sse_events(raw)[-1] == (None, "[DONE]")


async def test_prefill_rejection_falls_back_to_fresh_answer(gateway, vendor_env, fake_mistral, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_mistral.text = fake_anthropic.text = "red green blue yellow"
    fake_mistral.inject(Fault(cut_after=3))
    fake_anthropic.inject(Fault(status=400, body=anthropic_error(
        "invalid_request_error", "This model does not support assistant message prefill.")))
    status, _, raw = await post(gw, {"model": "mistral-small-latest", "messages": HI,
                                     "fallbacks": ["claude"], **STREAM})
    assert stream_text(raw) == "red green blue yellow"
    assert sse_events(raw)[-1] == (None, "[DONE]")
    assert fake_anthropic.requests[-1].body["messages"][-1]["role"] == "user"


async def test_unrecoverable_cut_ends_with_error_event_and_no_done(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.text = "first second third fourth"
    fake_openai.inject(Fault(cut_after=3), Fault(status=500, body=OA_500))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    events = sse_events(raw)
    assert events[-1][0] == "error"
    err = orjson.loads(events[-1][1])["error"]
    assert err["code"] == "upstream_unavailable"  # the original cut, not the retry's 500
    assert all(d != "[DONE]" for _, d in events)
    assert stream_text(raw) == "first second "


async def test_sdk_raises_on_error_event(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(cut_after=3), Fault(status=500, body=OA_500))
    stream = await gw.sdk().chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_stalled_stream_continued_on_fallback(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway({**vendor_env, "STREAM_IDLE_TIMEOUT": "0.3"})
    fake_openai.text = "uno dos tres cuatro"
    fake_openai.inject(Fault(stall_after=3))
    fake_mistral.inject(Fault(text="tres cuatro"))  # Mistral continues the prefix, echoing it first
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"], **STREAM})
    assert stream_text(raw) == "uno dos tres cuatro"
    assert fake_mistral.prefills == ["uno dos "]
    assert sse_events(raw)[-1] == (None, "[DONE]")
    errs = gw.events("error")
    assert errs and errs[0]["error_type"] == "upstream_timeout"


@pytest.mark.parametrize("glued", [False, True], ids=["own-piece", "glued-to-the-next-event"])
async def test_single_malformed_event_skipped(gateway, vendor_env, fake_openai, glued):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(malformed_at=2, malformed_glued=glued))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert stream_text(raw) == "Hello from fake OpenAI."
    assert sse_events(raw)[-1] == (None, "[DONE]")
    assert any(e["error_type"] == "malformed_event" for e in gw.events("error"))


async def _read_past_first_content(resp: aiohttp.ClientResponse) -> bytes:
    """What the client has read once a content chunk reached it (the gateway is pushing then)."""
    raw = b""
    while not stream_text(raw):
        raw += await resp.content.readuntil(b"\n\n")
    return raw


@pytest.mark.parametrize("fault", [
    {"error_at": 3},  # the vendor's in-stream error event
    {"malformed_at": (3, 4)},  # a second malformed event fails the segment
], ids=["error-event", "two-malformed"])
async def test_failure_while_chunks_are_pushed_is_continued(gateway, vendor_env, fake_openai, fault):
    """After the first content the upstream connection writes chunks to the client itself
    (push mode); a failure found there is handled like one found by a read: the answer
    is continued (here: a fresh answer from the same target, its prefix skipped)."""
    gw = await gateway(vendor_env)
    fake_openai.text = "w1 w2 w3 w4 w5"
    hold = asyncio.Event()
    fake_openai.inject(Fault(hold_after=3, hold=hold, **fault))  # role, "w1 ", "w2 ", then held
    async with gw.http.post(gw.url + "/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": HI, **STREAM}) as resp:
        raw = await _read_past_first_content(resp)
        hold.set()
        raw += await resp.read()
    assert stream_text(raw) == "w1 w2 w3 w4 w5"
    assert sse_events(raw)[-1] == (None, "[DONE]")
    assert len(fake_openai.requests) == 2
    errs = gw.events("error")
    want = "upstream_unavailable" if "error_at" in fault else "upstream_bad_response"
    assert any(e["error_type"] == want for e in errs), errs


async def test_stream_without_done_is_finalised(gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(no_done=True))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert stream_text(raw) == "Hello from fake OpenAI." and sse_events(raw)[-1] == (None, "[DONE]")
    assert len(fake_openai.requests) == 1


async def test_anthropic_stream_without_message_stop_but_complete(gateway, vendor_env, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_anthropic.inject(Fault(no_done=True))  # message_delta with stop_reason arrived
    status, _, raw = await post(gw, {"model": "claude", "messages": HI, **STREAM})
    assert stream_text(raw) == "Hello from fake Claude." and sse_events(raw)[-1] == (None, "[DONE]")


async def test_client_disconnect_cancels_upstream(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(stall_after=3))
    async with aiohttp.ClientSession() as s:
        resp = await s.post(gw.url + "/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": HI, "stream": True})
        await resp.content.readuntil(b"\n\n")
        resp.close()  # the client goes away mid-stream
    await asyncio.wait_for(fake_openai.disconnected.wait(), 5)
    for _ in range(100):
        if gw.events("response"):
            break
        await asyncio.sleep(0.01)
    line = gw.events("response")[-1]
    assert line["status"] == 499
    assert any(e.get("error_type") == "client_disconnected" for e in gw.events("error"))


# ---------------------------------------------------------------- quota headers on success
async def test_exhausted_quota_on_success_cools_the_target(gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(headers={"x-ratelimit-remaining-requests": "0",
                                      "x-ratelimit-reset-requests": "20s"}))
    status, h, _ = await post(gw, {"model": "auto", "messages": HI})
    assert status == 200 and h["X-Gateway-Provider"] == "openai"  # this answer itself is fine
    status, h, _ = await post(gw, {"model": "auto", "messages": HI})
    assert h["X-Gateway-Provider"] == "anthropic" and len(fake_openai.requests) == 1
    line = [e for e in gw.logs() if e.get("event") == "rate_limited"][0]
    assert line["provider"] == "openai" and line["wait_s"] == 20
    gw.advance(21)
    status, h, _ = await post(gw, {"model": "auto", "messages": HI})
    assert h["X-Gateway-Provider"] == "openai"


def test_anthropic_quota_headers():
    from datetime import UTC, datetime, timedelta

    from llm_gateway.adapters.anthropic import AnthropicAdapter
    from llm_gateway.settings import load_settings

    s = load_settings({}, {"CLAUDE_API_KEY": "k"})
    a = AnthropicAdapter(s.providers["anthropic"], s)
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    assert a.quota_exhausted({"anthropic-ratelimit-requests-remaining": "5"}) is None
    wait = a.quota_exhausted({"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": soon})
    assert 28 < wait <= 30


async def test_route_choice_is_logged_for_auto(gateway, vendor_env, fake_openai):
    gw = await gateway({k: v for k, v in vendor_env.items() if not k.startswith("CLAUDE")})
    await post(gw, {"model": "auto", "task_type": "summarization", "messages": HI})
    route = [e for e in gw.logs() if e.get("event") == "route"][-1]
    assert route["chosen"] == "gemini/gemini-2.0-flash"
    assert "summarization" in route["reason"]
    assert route["skipped"]["claude-3-5-haiku-latest"] == "provider not configured"


async def test_failed_proxy_response_still_reports_attempts_and_overhead(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "1"})
    fake_openai.inject(Fault(status=500, body=OA_500), Fault(status=500, body=OA_500))
    status, h, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 502
    assert h["X-Gateway-Attempts"] == "2" and float(h["X-Gateway-Overhead-Ms"]) >= 0


async def test_a_vendor_closing_an_idle_connection_costs_no_attempt(gateway, vendor_env, fake_openai):
    """The vendor drops the pooled keep-alive connection as the next request is written
    on it: the request goes again at once on a new connection, with no backoff, no
    retry counted and no cool-down."""
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})
    for refuse in (False, True):
        if refuse:
            fake_openai.inject(Fault(refuse_connection=True))
        status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user",
                                                                                   "content": f"q {refuse}"}]})
        assert status == 200 and headers["X-Gateway-Attempts"] == "1", raw
    fake_openai.inject(Fault(refuse_connection=True))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert status == 200 and sse_events(raw)[-1] == (None, "[DONE]")
    assert gw.sleeps == [] and gw.events("attempt") == [] and gw.events("error") == []
    assert len(fake_openai.requests) == 5  # three answers, each refused one sent again once
