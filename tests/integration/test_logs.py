"""The SPEC 9 log lines, checked line by line: every field, every provider, streams
included, at the levels LOG_LEVEL selects; prompts and answers only when asked; no
secret anywhere."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.fakes.base import Fault

BASE = {"timestamp", "level", "message", "request_id"}
REQUEST = BASE | {"event", "method", "path", "model", "task_type", "tenant", "stream"}
RESPONSE = BASE | {"event", "status", "provider", "model", "latency_ms", "attempts", "cache", "input_tokens",
                   "output_tokens", "total_tokens", "estimated", "cost_usd"}
ERROR = BASE | {"event", "error_type", "status", "provider", "model", "attempt", "detail"}
ATTEMPT = BASE | {"event", "provider", "model", "attempt", "error_type", "status", "delay_ms"}
MODELS = ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash", "mistral-small-latest", "mock"]
PROVIDERS = {"gpt-4o-mini": "openai", "claude-3-5-haiku-latest": "anthropic", "gemini-2.0-flash": "gemini",
             "mistral-small-latest": "mistral", "mock": "mock"}


_clients: dict[tuple[int, str], Any] = {}


@pytest.fixture(autouse=True)
async def _close_clients():
    yield
    for c in _clients.values():
        await c.close()
    _clients.clear()


def lines_of(gw, rid: str) -> list[dict[str, Any]]:
    """The gateway's own lines (they all have an ``event``) for one request id."""
    return [ln for ln in gw.logs() if ln.get("request_id") == rid and "event" in ln]


def one(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [ln for ln in lines if ln.get("event") == name]
    assert len(found) == 1, (name, lines)
    return found[0]


async def ask(gw, model: str, stream: bool, prompt: str, **kw: Any) -> tuple[str, str]:
    """(request id, answer text) through the openai SDK."""
    rid = f"log-{uuid.uuid4()}"
    key = kw.get("api_key", "-")
    client = _clients.get((id(gw), key))
    if client is None:  # one client per gateway and key: unclosed SDK clients log noise when collected
        client = _clients[(id(gw), key)] = gw.sdk(**kw)
    if not stream:
        r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                 extra_headers={"X-Request-ID": rid})
        return rid, r.choices[0].message.content
    s = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             stream=True, extra_headers={"X-Request-ID": rid})
    text = ""
    async for c in s:
        if c.choices:
            text += c.choices[0].delta.content or ""
    return rid, text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_every_provider_writes_complete_lines(gateway, vendor_env, stream):
    gw = await gateway(vendor_env)  # LOG_LEVEL=debug in the fixture
    for model in MODELS:
        prompt = f"tell me about {model} please"
        rid, answer = await ask(gw, model, stream, prompt)
        lines = lines_of(gw, rid)
        req, resp, ans = one(lines, "request"), one(lines, "response"), one(lines, "answer")
        assert REQUEST <= req.keys() and RESPONSE <= resp.keys(), model
        assert lines.index(req) == 0 and lines[-1] is resp  # the response line ends the request
        assert lines.index(ans) < lines.index(resp)
        assert (req["method"], req["path"], req["model"], req["stream"]) == ("POST", "/v1/chat/completions",
                                                                             model, stream)
        assert req["query"] == prompt  # debug level: the query is logged
        assert req["level"] == resp["level"] == "info" and ans["level"] == "debug"
        assert resp["status"] == 200 and resp["provider"] == PROVIDERS[model] and resp["model"]
        assert resp["attempts"] == 1 and resp["cache"] == "MISS"
        assert isinstance(resp["input_tokens"], int) and isinstance(resp["output_tokens"], int)
        assert resp["total_tokens"] == resp["input_tokens"] + resp["output_tokens"]
        assert isinstance(resp["estimated"], bool) and isinstance(resp["cost_usd"], str)
        assert resp["latency_ms"] > 0
        assert ans["answer"] == answer and answer
        assert resp["timestamp"].endswith("Z") and resp["message"] == "response"


async def test_cache_hit_lines(gateway, vendor_env):
    gw = await gateway(vendor_env)
    _, answer = await ask(gw, "gpt-4o-mini", False, "cache me")
    rid, again = await ask(gw, "gpt-4o-mini", True, "cache me")
    lines = lines_of(gw, rid)
    resp, ans = one(lines, "response"), one(lines, "answer")
    assert again == answer
    assert resp["cache"] == "HIT" and resp["attempts"] == 0 and resp["cost_usd"] == "0"
    assert resp["provider"] == "openai" and resp["input_tokens"] > 0
    assert ans["cache"] == "HIT" and ans["answer"] == answer


async def test_info_level_keeps_prompts_and_answers_out(gateway, vendor_env):
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})
    secret_prompt = "my-private-prompt-" + uuid.uuid4().hex
    for stream in (False, True):
        rid, answer = await ask(gw, "gpt-4o-mini", stream, secret_prompt + str(stream))
        lines = lines_of(gw, rid)
        assert "query" not in one(lines, "request")
        assert not [ln for ln in lines if ln.get("event") == "answer"]
        assert {ln["level"] for ln in lines} <= {"info", "warning", "error"}
    text = gw.log_text()
    assert secret_prompt not in text and "Hello from fake OpenAI" not in text


async def test_log_queries_at_info_cuts_the_query(gateway, vendor_env):
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info", "LOG_QUERIES": "true"})
    prompt = "x" * 3000
    rid, _ = await ask(gw, "mock", False, prompt)
    lines = lines_of(gw, rid)
    assert one(lines, "request")["query"] == "x" * 2000
    assert not [ln for ln in lines if ln.get("event") == "answer"]  # answers: debug only


async def test_error_and_attempt_lines(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info", "MAX_RETRIES": "1"})
    fake_openai.inject(Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}),
                       Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}))
    rid = "log-" + uuid.uuid4().hex
    async with gw.http.post(gw.url + "/v1/chat/completions", headers={"X-Request-ID": rid}, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fail over"}],
            "fallbacks": ["mistral-small-latest"]}) as r:
        assert r.status == 200
    lines = lines_of(gw, rid)
    errors = [ln for ln in lines if ln.get("event") == "error"]
    attempts = [ln for ln in lines if ln.get("event") == "attempt"]
    assert len(errors) == 2 and len(attempts) == 2  # a retry, then a fallback
    for ln in errors:
        assert ERROR <= ln.keys() and ln["level"] == "warning"
        assert (ln["provider"], ln["model"], ln["status"], ln["error_type"]) == (
            "openai", "gpt-4o-mini", 500, "upstream_unavailable")
    for ln in attempts:
        assert ATTEMPT <= ln.keys() and ln["provider"] == "openai"
    assert attempts[0]["message"] == "retrying" and attempts[0]["delay_ms"] > 0
    assert attempts[1]["message"] == "falling back"
    resp = one(lines, "response")
    assert resp["provider"] == "mistral" and resp["attempts"] == 3


async def test_warning_level_writes_only_problems(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "LOG_LEVEL": "warning", "MAX_RETRIES": "1"})
    fake_openai.inject(Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}))
    rid, _ = await ask(gw, "gpt-4o-mini", False, "hello")
    lines = lines_of(gw, rid)
    assert [ln["event"] for ln in lines] == ["error"]
    assert ERROR <= lines[0].keys()
    assert {ln["level"] for ln in gw.logs()} <= {"warning", "error"}


async def test_no_secret_in_any_line(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "GATEWAY_API_KEYS": "gw-key-team-a-123456:team-a"})
    await ask(gw, "gpt-4o-mini", False, "hi", api_key="gw-key-team-a-123456")
    await ask(gw, "gpt-4o-mini", True, "hi stream", api_key="gw-key-team-a-123456")
    async with gw.http.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"},
                            headers={"Authorization": "Bearer presented-wrong-key-999"}) as r:
        assert r.status == 401
    async with gw.http.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"},
                            headers={"x-api-key": "presented-wrong-key-888"}) as r:
        assert r.status == 401
    text = gw.log_text()
    secrets = [v for k, v in vendor_env.items() if k.endswith("_KEY")]
    for s in [*secrets, "gw-key-team-a-123456", "presented-wrong-key-999", "presented-wrong-key-888"]:
        assert s not in text
    assert "Authorization" not in text and "authorization" not in text
    for ln in gw.logs():
        if ln.get("event") in ("request", "response", "error", "attempt", "answer"):
            assert ln["request_id"]
    tenants = {ln["tenant"] for ln in gw.events("request")}
    assert "team-a" in tenants


@pytest.mark.parametrize("path", ["/api/query", "/v1/gateway/query"])
async def test_native_endpoints_write_the_same_lines(gateway, vendor_env, path):
    gw = await gateway(vendor_env)
    for attempt in ("MISS", "HIT"):
        rid = "log-" + uuid.uuid4().hex
        async with gw.http.post(gw.url + path, headers={"X-Request-ID": rid},
                                json={"query": "native please", "model": "gpt-4o-mini"}) as r:
            assert r.status == 200
            body = await r.json()
        lines = lines_of(gw, rid)
        req, resp, ans = one(lines, "request"), one(lines, "response"), one(lines, "answer")
        assert REQUEST <= req.keys() and RESPONSE <= resp.keys()
        assert req["path"] == path and req["query"] == "native please" and req["model"] == "gpt-4o-mini"
        assert resp["cache"] == attempt and resp["provider"] == "openai"
        assert resp["input_tokens"] == body["token_usage"]["input_tokens"]
        assert ans["answer"] == body["response"]
        assert lines[-1] is resp
