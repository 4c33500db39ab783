"""Hardening: strict validation naming the field, header size limits, slow clients,
CORS only for configured origins, and secrets that never leave (logs, errors, status)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import orjson
import pytest

from tests.fakes.base import Fault

KEY = "hardening-env-key-4242424242"
HASHED_KEY = "hardening-hashed-key-1717171717"
WRONG_KEY = "hardening-wrong-key-9999999999"
CONFIG = f'[[keys]]\nsha256 = "{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}"\ntenant = "beta"\n'
MSG = [{"role": "user", "content": "x"}]


def envelope(body: dict, rid: str) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code", "request_id"}
    assert err["request_id"] == rid and "Traceback" not in err["message"]
    return err


# ---------------------------------------------------------------- validation
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("extra, param", [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": ["lookup"]}, "tools[0]"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters"),
    ({"tools": [TOOL] * 129}, "tools"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function.name"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": []}}},
     "response_format.json_schema.schema"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"logprobs": 1}, "logprobs"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"user": 42}, "user"),
    ({"logit_bias": {"50256": 200}}, "logit_bias.50256"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"model": "m" * 300}, "model"),
    ({"fallbacks": ["mock"] * 17}, "fallbacks"),
    ({"messages": MSG * 10_001}, "messages"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
    ({"messages": MSG + [{"role": "tool", "content": "42"}]}, "messages[1].tool_call_id"),
    ({"messages": MSG + [{"role": "assistant", "tool_calls": {"id": "a"}}]}, "messages[1].tool_calls"),
    ({"messages": MSG + [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function"}]}]},
     "messages[1].tool_calls[0].function"),
    ({"messages": MSG + [{"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
])
async def test_strict_validation_names_the_field(gateway, extra, param):
    gw = await gateway({})
    body = {"model": "mock", "messages": MSG, **extra}
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 400, await r.text()
        err = envelope(await r.json(), r.headers["X-Request-ID"])
        assert err["param"] == param
        assert f"'{param}'" in err["message"]


async def test_valid_tool_shapes_pass(gateway):
    gw = await gateway({})
    body = {"model": "mock", "messages": MSG + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]}],
        "tools": [TOOL, {"type": "custom", "custom": {"name": "grammar"}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
        "parallel_tool_calls": True, "user": "u1", "logit_bias": {"1": -100}, "metadata": {"k": "v"},
        "temperature": None, "top_logprobs": None}
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status in (200, 400), await r.text()
        if r.status == 400:  # refused by the adapter (a vendor limitation), never by validation shape
            err = (await r.json())["error"]
            assert err["code"] == "unsupported_parameter", err


# ---------------------------------------------------------------- HTTP-level limits
async def raw_request(gw, data: bytes, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection(gw.server.host, gw.server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n",
])
async def test_oversized_headers_are_refused_cleanly(gateway, request_bytes):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:alpha"})
    data = await raw_request(gw, request_bytes)
    assert data == b"" or data.split(b" ", 2)[1] in (b"400", b"431")
    async with gw.http.get(gw.url + "/healthz") as r:
        assert r.status == 200  # still serving
    logs = gw.log_text()
    bad = [ln for ln in logs.splitlines() if "aaaaaaaaaa" in ln or KEY in ln or "Traceback" in ln]
    assert not bad, bad[0][:3000]


async def test_header_limit_is_configurable(gateway):
    gw = await gateway({"MAX_HEADER_BYTES": "2048"})
    data = await raw_request(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Mid: " + b"b" * 4000 + b"\r\n\r\n")
    assert data.split(b" ", 2)[1] == b"400"
    async with gw.http.get(gw.url + "/healthz", headers={"X-Small": "c" * 1000}) as r:
        assert r.status == 200


async def test_slow_body_gets_408(gateway):
    gw = await gateway({"CLIENT_BODY_TIMEOUT": "0.3"})
    started = time.monotonic()
    data = await raw_request(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                 b"\r\nContent-Length: 1000\r\n\r\n{\"model\": \"mock\"", timeout=10)
    assert time.monotonic() - started < 5
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"408"
    assert b"Connection: close" in head
    err = orjson.loads(body)["error"]
    assert err["code"] == "request_timeout" and "CLIENT_BODY_TIMEOUT" in err["message"]
    async with gw.http.post(gw.url + "/v1/chat/completions", json={"model": "mock", "messages": MSG}) as r:
        assert r.status == 200


# ---------------------------------------------------------------- CORS
ORIGIN = "https://app.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


async def test_no_cors_by_default(gateway):
    gw = await gateway({})
    async with gw.http.options(gw.url + "/v1/chat/completions", headers=PREFLIGHT) as r:
        assert r.status != 204 and "Access-Control-Allow-Origin" not in r.headers
    async with gw.http.post(gw.url + "/v1/chat/completions", json={"model": "mock", "messages": MSG},
                            headers={"Origin": ORIGIN}) as r:
        assert r.status == 200
        assert not any(k.lower().startswith("access-control-") for k in r.headers)


async def test_cors_for_configured_origins_only(gateway):
    gw = await gateway({"CORS_ALLOW_ORIGINS": f"{ORIGIN}, http://localhost:3000",
                        "GATEWAY_API_KEYS": f"{KEY}:alpha"})
    # preflight: no key needed, answered before auth
    async with gw.http.options(gw.url + "/v1/chat/completions", headers=PREFLIGHT) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in r.headers
    async with gw.http.options(gw.url + "/v1/chat/completions",
                               headers={**PREFLIGHT, "Origin": "https://evil.example"}) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        envelope(await r.json(), r.headers["X-Request-ID"])
    body = {"model": "mock", "messages": MSG}
    hdr = {"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"}
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body, headers=hdr) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]
    async with gw.http.post(gw.url + "/v1/chat/completions", json={**body, "stream": True}, headers=hdr) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        await r.read()
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body, headers={"Origin": ORIGIN}) as r:
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN  # the UI can read it
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body,
                            headers={**hdr, "Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


def test_bad_cors_origin_is_a_config_error():
    from llm_gateway.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
        load_settings({}, {"CORS_ALLOW_ORIGINS": "https://ok.example, not an origin"})


# ---------------------------------------------------------------- secrets never leave
async def test_no_secret_in_logs_errors_or_status(gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway({**vendor_env, "GATEWAY_API_KEYS": f"{KEY}:alpha", "MAX_RETRIES": "0",
                        "CACHE_ENABLED": "false", "LOG_QUERIES": "true"}, config=CONFIG)
    secrets = [KEY, HASHED_KEY, WRONG_KEY, *(v for k, v in vendor_env.items() if k.endswith("_API_KEY"))]
    bodies: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], **kw) -> int:
        async with gw.http.request(method, gw.url + path, headers=headers, **kw) as r:
            bodies.append(await r.text())
            bodies.append(repr(list(r.headers.items())))
            return r.status

    good, hashed = {"Authorization": f"Bearer {KEY}"}, {"x-api-key": HASHED_KEY}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    assert await call("POST", "/v1/chat/completions", good, json=chat) == 200
    assert await call("POST", "/v1/chat/completions", hashed, json={**chat, "stream": True}) == 200
    assert await call("POST", "/v1/chat/completions", {"Authorization": f"Bearer {WRONG_KEY}"}, json=chat) == 401
    assert await call("POST", "/v1/chat/completions", {"Authorization": f"Basic {KEY}"}, json=chat) == 401
    assert await call("POST", "/v1/chat/completions", good, data=b"{broken") == 400
    fake_openai.inject(Fault(status=401, body={"error": {
        "message": f"Incorrect API key provided: {fake_openai.api_key}", "type": "invalid_request_error"}}))
    assert await call("POST", "/v1/chat/completions", good, json=chat) == 502
    fake_anthropic.inject(Fault(status=500, body=b"<html>internal: " + fake_anthropic.api_key.encode() + b"</html>"))
    assert await call("POST", "/v1/chat/completions", good,
                      json={**chat, "model": "claude-3-5-haiku-latest"}) in (502, 503)
    await call("GET", "/api/status", good)
    await call("GET", "/v1/gateway/requests", good)
    await call("GET", "/v1/models", hashed)
    await call("GET", "/metrics", {})
    await call("GET", "/openapi.json", {})
    logs = gw.log_text()
    assert '"event":"response"' in logs
    for secret in secrets:
        assert secret not in logs, "a key reached the logs"
        for b in bodies:
            assert secret not in b, "a key reached a client"


async def test_upstream_error_body_is_not_echoed_raw(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0", "CACHE_ENABLED": "false"})
    leak = "sk-proj-LEAKED-internal-token-123"
    fake_openai.inject(Fault(status=500, body=f"<html><pre>upstream stack: {leak}</pre></html>",
                             headers={"X-Internal-Trace": leak, "Set-Cookie": f"session={leak}"}))
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
        text = await r.text()
        assert r.status in (502, 503)
        assert r.content_type == "application/json"
        err = envelope(orjson.loads(text), r.headers["X-Request-ID"])
        assert err["type"] and err["code"]
        assert leak not in text and "<html>" not in text
        assert "X-Internal-Trace" not in r.headers and "Set-Cookie" not in r.headers


async def test_vendor_message_quoting_our_key_is_masked(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0", "CACHE_ENABLED": "false"})
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": f"Bad request for key {fake_openai.api_key}", "type": "invalid_request_error",
        "param": "messages", "code": None}}))
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
        text = await r.text()
        assert r.status == 400
        assert fake_openai.api_key not in text and "[REDACTED]" in text
        envelope(orjson.loads(text), r.headers["X-Request-ID"])
