"""The client's stream after the first byte: SPEC 7 and 8 at its edges.

Recovery is bounded, a finished answer whose end marker is lost is finalised (not
generated again), answers recovery cannot splice (several choices, tool calls) end
with an error event, the error event never carries a secret, every stream carries
X-Request-ID, and the usage chunk belongs to the stream it ends. Real HTTP against the
fake vendors, faults injected there.
"""

from __future__ import annotations

import orjson
import pytest

from tests.fakes.base import Fault, sse
from tests.integration.test_routing_failures import HI, OA_500, STREAM, post, sse_events, stream_text


def chunks(raw: bytes) -> list[dict]:
    return [orjson.loads(d) for ev, d in sse_events(raw) if ev is None and d != "[DONE]"]


async def test_recovery_is_bounded_when_every_stream_breaks(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.text = "one two three four"
    fake_openai.inject(*[Fault(cut_after=3) for _ in range(10)])
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert status == 200
    assert len(fake_openai.requests) == 2  # the answer, then the last resort once on the same target
    assert sse_events(raw)[-1][0] == "error" and all(d != "[DONE]" for _, d in sse_events(raw))


async def test_recovery_is_bounded_across_fallbacks(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway(vendor_env)
    fake_openai.text = fake_mistral.text = "one two three four"
    fake_openai.inject(*[Fault(cut_after=3) for _ in range(10)])
    fake_mistral.inject(*[Fault(cut_after=2) for _ in range(10)])
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"], **STREAM})
    assert len(fake_openai.requests) + len(fake_mistral.requests) <= 3
    assert sse_events(raw)[-1][0] == "error"


@pytest.mark.parametrize("fault", [{"cut_after": 5}, {"stall_after": 5}], ids=["cut", "stall"])
async def test_finished_answer_without_done_is_not_generated_again(gateway, vendor_env, fake_openai, fault):
    """role, "a ", "b", finish_reason, usage: then the connection breaks or goes silent."""
    gw = await gateway({**vendor_env, "STREAM_IDLE_TIMEOUT": "0.2"})
    fake_openai.text = "a b"
    fake_openai.inject(Fault(**fault))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert stream_text(raw) == "a b" and sse_events(raw)[-1] == (None, "[DONE]")
    assert len(fake_openai.requests) == 1
    usage = chunks(raw)[-1]["usage"]
    assert usage["completion_tokens"] == 2  # the vendor's own count, once
    assert any(e["message"] == "stream finalised without the vendor's end marker" for e in gw.events("error"))
    # the broken connection is not reused: the next request is answered normally
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert status == 200 and stream_text(raw) == "a b"


async def test_several_choices_are_not_spliced(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.text = "one two three"
    fake_openai.inject(Fault(cut_after=6))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "n": 2, **STREAM})
    assert sse_events(raw)[-1][0] == "error" and all(d != "[DONE]" for _, d in sse_events(raw))
    assert len(fake_openai.requests) == 1


async def test_streamed_tool_call_is_not_spliced(gateway, vendor_env, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_anthropic.text = "ok"
    fake_anthropic.tool_call = {"name": "get_weather", "input": {"city": "Paris"}}
    # message_start, text start, ping, "ok", text stop, tool start, "" delta: then cut
    fake_anthropic.inject(Fault(cut_after=7))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    status, _, raw = await post(gw, {"model": "claude", "messages": HI, "tools": tools, **STREAM})
    assert sse_events(raw)[-1][0] == "error"
    assert len(fake_anthropic.requests) == 1
    ids = {tc.get("id") for c in chunks(raw) for tc in c["choices"][0]["delta"].get("tool_calls", [])} - {None}
    assert ids == {"toolu_fake01"}  # the call was announced once, never repeated by a second answer


async def test_error_event_never_carries_a_key(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    key = vendor_env["OPENAI_API_KEY"]
    leaky = {"error": {"message": f"Incorrect API key provided: {key}.", "type": "server_error",
                       "param": None, "code": None}}
    fake_openai.stream_error_event = lambda: sse(leaky)  # a server that echoes the key in its error event
    fake_openai.inject(Fault(error_at=3), Fault(status=500, body=OA_500))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    ev, data = sse_events(raw)[-1]
    assert ev == "error" and key not in raw.decode() and "[REDACTED]" in data


@pytest.mark.parametrize("sent", [{"X-Request-ID": "client-rid-42"}, {}])
async def test_every_stream_carries_x_request_id(gateway, vendor_env, fake_openai, sent):
    gw = await gateway({**vendor_env, "CACHE_ENABLED": "true"})
    for cache in ("MISS", "HIT"):
        status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM}, headers=sent)
        assert status == 200 and headers["X-Gateway-Cache"] == cache
        rid = headers["X-Request-ID"]
        assert rid == sent["X-Request-ID"] if sent else len(rid) == 36
    fake_openai.inject(Fault(cut_after=3), Fault(status=500, body=OA_500))
    status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                                           **STREAM}, headers=sent)
    assert sse_events(raw)[-1][0] == "error" and headers.get("X-Request-ID")


async def test_usage_chunk_belongs_to_its_stream(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    cs = chunks(raw)
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["total_tokens"] > 0
    assert {c["id"] for c in cs} == {"chatcmpl-fake123"} and {c["created"] for c in cs} == {1700000000}
    assert {c["model"] for c in cs} == {cs[0]["model"]} and cs[-1]["system_fingerprint"] == "fp_fake"


async def test_vendor_504_is_retried_on_the_same_model(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=504, body={"error": {"message": "Gateway Timeout", "type": "server_error",
                                                         "param": None, "code": None}}))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI})
    assert status == 200 and len(fake_openai.requests) == 2


async def test_falling_back_line_names_the_failed_status(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0"})
    fake_openai.inject(Fault(status=500, body=OA_500))
    status, _, _ = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"]})
    assert status == 200
    fell = [e for e in gw.events("attempt") if e["message"] == "falling back"]
    assert fell and fell[0]["status"] == 500 and fell[0]["error_type"] == "upstream_unavailable"


async def test_chunks_carry_usage_only_when_the_client_asked(gateway, vendor_env, fake_openai):
    """The gateway always asks an OpenAI upstream for usage (for cost); a client that did
    not ask sees chunks as OpenAI would have sent them: no "usage" key, no usage chunk."""
    gw = await gateway(vendor_env)
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "stream": True})
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}
    cs = chunks(raw)
    assert cs and all("usage" not in c for c in cs) and all(c["choices"] for c in cs)
    assert stream_text(raw) == "Hello from fake OpenAI." and sse_events(raw)[-1] == (None, "[DONE]")
    for cache in ("HIT", "MISS"):  # the same question (a replay from the cache), then another
        messages = HI if cache == "HIT" else [{"role": "user", "content": "another"}]
        status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": messages, **STREAM})
        cs = chunks(raw)
        assert headers["X-Gateway-Cache"] == cache
        assert all(c["usage"] is None for c in cs[:-1]) and cs[-1]["usage"]["total_tokens"] > 0


async def test_mock_streams_every_choice(gateway):
    gw = await gateway({})
    status, _, raw = await post(gw, {"model": "mock", "messages": HI, "n": 2, "stream": True})
    texts: dict[int, str] = {}
    finished = set()
    for c in chunks(raw):
        assert "usage" not in c
        for ch in c["choices"]:
            texts[ch["index"]] = texts.get(ch["index"], "") + (ch["delta"].get("content") or "")
            if ch["finish_reason"]:
                finished.add(ch["index"])
    assert set(texts) == finished == {0, 1} and texts[0] == texts[1] != ""
    status, _, plain = await post(gw, {"model": "mock", "messages": HI, "n": 2})
    assert [c["message"]["content"] for c in orjson.loads(plain)["choices"]] == [texts[0], texts[1]]


async def test_a_continued_stream_has_one_opening_chunk(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.text = "one two three four"
    fake_openai.inject(Fault(cut_after=3))  # role, "one ", "two ": then a fresh answer, its prefix skipped
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert stream_text(raw) == "one two three four" and len(fake_openai.requests) == 2
    deltas = [ch["delta"] for c in chunks(raw) for ch in c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert all(any(v not in ("", None) for v in d.values()) for d in deltas[1:] if d), deltas


async def test_backoff_sleep_is_not_gateway_overhead(vendor_env, fake_openai, tmp_path):
    """X-Gateway-Overhead-Ms is the gateway's own time: a real 300 ms wait a vendor asked
    for is neither its work nor the upstream's."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from llm_gateway.app import create_app
    from llm_gateway.settings import load_settings

    settings = load_settings({}, {**vendor_env, "LEDGER_PATH": str(tmp_path / "l.sqlite3"), "MAX_BACKOFF": "2000"})
    server = TestServer(create_app(settings), host="127.0.0.1")  # the real asyncio.sleep
    await server.start_server()
    try:
        fake_openai.inject(Fault(status=429, body={"error": {"message": "slow down", "type": "requests",
                                                             "param": None, "code": "rate_limit_exceeded"}},
                                 headers={"retry-after-ms": "300"}))
        async with aiohttp.ClientSession() as s, s.post(str(server.make_url("/v1/chat/completions")),
                                                        json={"model": "gpt-4o-mini", "messages": HI}) as r:
            assert r.status == 200 and r.headers["X-Gateway-Attempts"] == "2"
            assert float(r.headers["X-Gateway-Overhead-Ms"]) < 250
    finally:
        await server.close()


# ---------------------------------------------------------------- recovery edges (second audit)
async def test_a_continuation_shorter_than_what_was_delivered_is_not_complete(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.text = "one two three four"
    fake_openai.inject(Fault(cut_after=3), Fault(text="one"))  # "one two " delivered; the fresh answer: "one"
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert sse_events(raw)[-1][0] == "error" and all(d != "[DONE]" for _, d in sse_events(raw))
    assert stream_text(raw) == "one two "


async def test_recovery_tries_the_broken_target_after_a_failed_fallback(gateway, vendor_env, fake_openai,
                                                                       fake_mistral):
    gw = await gateway(vendor_env)
    fake_openai.text = "one two three four"
    fake_openai.inject(Fault(cut_after=3))  # then the last resort: the same target, a fresh answer
    fake_mistral.inject(Fault(status=503, body={"object": "error", "message": "down"}))
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, "fallbacks": ["mistral"], **STREAM})
    assert stream_text(raw) == "one two three four" and sse_events(raw)[-1] == (None, "[DONE]")
    assert len(fake_openai.requests) == 2 and len(fake_mistral.requests) == 1


async def test_fallbacks_left_after_a_recovery_stay_for_the_next_one(gateway, vendor_env, fake_openai,
                                                                     fake_mistral, fake_gemini):
    gw = await gateway(vendor_env)
    fake_openai.text = fake_gemini.text = "one two three four five"
    fake_openai.inject(Fault(cut_after=3))  # openai breaks: gemini continues (fresh)
    fake_gemini.inject(Fault(cut_after=4))  # gemini breaks later: mistral, untried, continues
    fake_mistral.inject(Fault(text=" END"))  # after the prefill it is given (and echoes)
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI,
                                     "fallbacks": ["gemini-2.0-flash", "mistral-small-latest"], **STREAM})
    assert len(fake_gemini.requests) == 1 and len(fake_mistral.requests) == 1
    delivered = fake_mistral.prefills[0]
    assert delivered.startswith("one two ") and len(delivered) > len("one two ")  # gemini's share in it
    assert stream_text(raw) == delivered + " END" and sse_events(raw)[-1] == (None, "[DONE]")
    cs = chunks(raw)
    assert len({c["id"] for c in cs}) == 1 and len({c["created"] for c in cs}) == 1
    assert len({c["model"] for c in cs}) == 1  # one identity for the whole stream, the usage chunk too


async def test_prefill_continuation_does_not_double_the_stripped_whitespace(gateway, vendor_env, fake_mistral,
                                                                           fake_anthropic):
    gw = await gateway(vendor_env)
    fake_mistral.text = "one two three four"
    fake_mistral.inject(Fault(cut_after=3))  # "one two " delivered; Claude gets the prefill "one two"
    fake_anthropic.inject(Fault(text=" three four"))  # and writes the space again
    status, _, raw = await post(gw, {"model": "mistral-small-latest", "messages": HI,
                                     "fallbacks": ["claude-3-5-haiku-latest"], **STREAM})
    assert fake_anthropic.prefills == ["one two"]
    assert stream_text(raw) == "one two three four" and sse_events(raw)[-1] == (None, "[DONE]")


async def test_a_cut_claude_stream_bills_the_prompt_claude_counted(gateway, vendor_env, fake_anthropic):
    gw = await gateway(vendor_env)
    fake_anthropic.text = "one two three four five"
    fake_anthropic.inject(Fault(cut_after=5), Fault(status=500, body={"type": "error", "error": {
        "type": "api_error", "message": "boom"}}))
    prompt = [{"role": "user", "content": "count these words please " * 20}]
    status, _, raw = await post(gw, {"model": "claude-3-5-haiku-latest", "messages": prompt, **STREAM})
    assert sse_events(raw)[-1][0] == "error"
    expected = fake_anthropic.input_tokens(fake_anthropic.requests[0].body)  # what message_start said
    line = gw.events("response")[-1]
    assert line["input_tokens"] == expected and line["estimated"] is True


async def test_the_ledger_records_how_a_stream_ended(gateway, vendor_env, fake_openai):
    """A stream cut for good is an error in the ledger (its 200 was sent before the
    failure); one continued after a failure is a success."""
    from llm_gateway.keys import LEDGER

    gw = await gateway(vendor_env)
    fake_openai.text = "one two three four"
    fake_openai.inject(Fault(cut_after=3), Fault(status=500, body=OA_500))
    await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    fake_openai.inject(Fault(cut_after=3))
    await post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}], **STREAM})
    assert await gw.app[LEDGER].flush(5)
    async with gw.http.get(gw.url + "/v1/gateway/requests") as r:
        rows = (await r.json())["data"]
    assert [(x["status"], x["error_type"]) for x in rows] == [(200, None), (502, "upstream_unavailable")]


async def test_a_complete_answer_does_not_wait_the_idle_limit_for_its_end_marker(gateway, vendor_env, fake_openai):
    """STREAM_IDLE_TIMEOUT is 30 s; the answer, its finish reason and its usage are in, and
    the vendor goes silent before [DONE]: the client has its [DONE] within the grace."""
    import asyncio
    import time

    from llm_gateway.routing.stream import END_GRACE

    gw = await gateway({**vendor_env, "STREAM_IDLE_TIMEOUT": "30"})
    fake_openai.text = "a b"
    fake_openai.inject(Fault(stall_after=5))  # role, "a ", "b", finish, usage: then silence
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert stream_text(raw) == "a b" and sse_events(raw)[-1] == (None, "[DONE]")
    assert time.monotonic() - t0 < END_GRACE + 5  # bounded by the grace, not by the 30 s limit
    assert len(fake_openai.requests) == 1 and chunks(raw)[-1]["usage"]["completion_tokens"] == 2


async def test_a_stream_cut_by_shutdown_ends_with_an_error_event(vendor_env, fake_openai, tmp_path):
    """The drain time is over and the gateway stops: the client's unfinished stream ends
    with an SSE error event (not a cut body), and the request is in the ledger as failed."""
    import asyncio

    import aiohttp
    from aiohttp.test_utils import TestServer

    from llm_gateway.app import create_app
    from llm_gateway.settings import load_settings

    db = tmp_path / "l.sqlite3"
    settings = load_settings({}, {**vendor_env, "LEDGER_PATH": str(db), "SHUTDOWN_TIMEOUT": "0.2"})
    server = TestServer(create_app(settings), host="127.0.0.1", shutdown_timeout=5)
    await server.start_server()
    hold = asyncio.Event()
    fake_openai.text = "one two three four"
    fake_openai.inject(Fault(hold_after=3, hold=hold))  # role, "one ", "two ": then the vendor waits
    async with aiohttp.ClientSession() as s, s.post(str(server.make_url("/v1/chat/completions")),
                                                    json={"model": "gpt-4o-mini", "messages": HI, **STREAM}) as r:
        raw = b""
        while b"two" not in raw:
            raw += await r.content.readuntil(b"\n\n")
        closing = asyncio.create_task(server.close())
        raw += await r.content.read()
    await closing
    hold.set()
    events = sse_events(raw)
    assert events[-1][0] == "error" and "shutting down" in orjson.loads(events[-1][1])["error"]["message"]
    assert all(d != "[DONE]" for _, d in events)
    import sqlite3
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, error_type FROM llm_gateway_requests").fetchall() == [(503, "shutdown")]


async def test_a_request_cut_by_shutdown_gets_a_503_envelope(vendor_env, fake_openai, tmp_path):
    import asyncio

    import aiohttp
    from aiohttp.test_utils import TestServer

    from llm_gateway.app import create_app
    from llm_gateway.settings import load_settings

    settings = load_settings({}, {**vendor_env, "LEDGER_PATH": str(tmp_path / "l.sqlite3"), "SHUTDOWN_TIMEOUT": "0.2",
                                  "REQUEST_TIMEOUT": "60"})
    server = TestServer(create_app(settings), host="127.0.0.1", shutdown_timeout=5)
    await server.start_server()
    fake_openai.inject(Fault(delay=3))  # the vendor takes its time: the drain ends first
    async with aiohttp.ClientSession() as s:
        pending = asyncio.create_task(s.post(str(server.make_url("/v1/chat/completions")),
                                             json={"model": "gpt-4o-mini", "messages": HI}))
        while not fake_openai.requests:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(server.close())
        r = await pending
        body = await r.json()
    await closing
    assert r.status == 503 and "shutting down" in body["error"]["message"] and r.headers["Retry-After"] == "1", body
    assert body["error"]["request_id"] == r.headers["X-Request-ID"]


async def test_a_huge_prompt_streams_with_estimated_usage(gateway, vendor_env, fake_openai):
    """A 1.2-million-character prompt to a server that counts no usage: the estimate
    covers it (the tokenizer refuses such a text whole), the stream ends with [DONE]."""
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(usage=False))
    huge = [{"role": "user", "content": "lorem ipsum " * 100_000}]
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": huge, **STREAM,
                                     "stream_options": {"include_usage": True}})
    assert status == 200 and sse_events(raw)[-1] == (None, "[DONE]"), raw[-300:]
    usage = chunks(raw)[-1]["usage"]
    assert usage["prompt_tokens"] >= 200_000
    async with gw.http.post(gw.url + "/v1/gateway/cost-estimate",
                            json={"query": "x" * 1_100_000, "model": "gpt-4o-mini"}) as r:
        assert r.status == 200 and (await r.json())["input_tokens"] > 100_000


async def test_a_fault_of_ours_mid_stream_ends_with_an_error_event(gateway, vendor_env, fake_openai, monkeypatch):
    """Whatever goes wrong after the first byte, the client gets the SSE error event, not
    a second HTTP response inside the body; the log line, the metrics and the ledger all
    count the request by that error."""
    from llm_gateway.handlers import chat as chat_handler

    from tests.integration.test_metrics import scrape, value

    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})

    def broken(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(chat_handler, "settle_stream", broken)
    status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert status == 200 and b"HTTP/1.1" not in raw
    events = sse_events(raw)
    assert events[-1][0] == "error" and all(d != "[DONE]" for _, d in events)
    err = orjson.loads(events[-1][1])["error"]
    assert err["code"] == "internal_error" and err["request_id"] == headers["X-Request-ID"]
    assert "a bug" not in raw.decode()
    monkeypatch.undo()
    fake_openai.text = "one two three four"
    fake_openai.inject(*[Fault(cut_after=3) for _ in range(10)])  # every stream breaks: 502 after the first byte
    status, _, raw = await post(gw, {"model": "gpt-4o-mini", "messages": HI, **STREAM})
    assert status == 200 and sse_events(raw)[-1][0] == "error"
    statuses = [e["status"] for e in gw.events("response")]
    async with gw.http.get(gw.url + "/v1/gateway/requests") as r:
        rows = (await r.json())["data"]
    assert sorted(statuses) == sorted(d["status"] for d in rows) and 500 in statuses, (statuses, rows)
    assert 200 not in statuses
    m = await scrape(gw)
    for s in statuses:
        assert value(m, "llm_gateway_requests_total", route="/v1/chat/completions", status=str(s)) == 1


ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


@pytest.mark.parametrize("mode", ["push", "pull"])
@pytest.mark.parametrize("vendor,model,ping,after", [
    ("openai", "gpt-4o-mini", b": keep-alive\n\n", 3),  # role, "one ", "two "
    ("anthropic", "claude-3-5-haiku-latest", ANTHROPIC_PING, 4),  # message_start, block start, ping, "one "
    ("gemini", "gemini-2.0-flash", b"\r\n", 2),
], ids=["openai-comment", "anthropic-ping", "gemini-blank-line"])
async def test_keep_alives_do_not_hold_a_stalled_stream(gateway, vendor_env, fake_openai, fake_anthropic,
                                                        fake_gemini, monkeypatch, mode, vendor, model, ping, after):
    """A vendor that keeps the connection alive with pings but sends no more of the
    answer is stalled: STREAM_IDLE_TIMEOUT is time without an event, keep-alives aside."""
    import asyncio
    import time

    from llm_gateway.upstream import HttpStream

    if mode == "pull":
        monkeypatch.setattr(HttpStream, "push", lambda *a: False)
    fake = {"openai": fake_openai, "anthropic": fake_anthropic, "gemini": fake_gemini}[vendor]
    gw = await gateway({**vendor_env, "STREAM_IDLE_TIMEOUT": "0.3"})
    fake.text = "one two three four"
    fake.inject(*[Fault(ping_after=after, ping=ping) for _ in range(3)])
    t0 = time.monotonic()
    async with asyncio.timeout(10):  # before the fix: held for as long as the pings went on
        status, _, raw = await post(gw, {"model": model, "messages": HI, **STREAM})
    assert status == 200 and time.monotonic() - t0 < 5
    events = sse_events(raw)
    assert events[-1][0] == "error" and "stalled" in orjson.loads(events[-1][1])["error"]["message"], events[-1]
    assert gw.events("error")[0]["error_type"] == "upstream_timeout"
    # no fallback: the last resort, once on the same target (and the log says so)
    assert [e["message"] for e in gw.events("attempt")] == ["stream continued on the same target"]
