"""Bad input gets a clean 4xx in the OpenAI envelope, and the gateway keeps serving."""

from __future__ import annotations

import pytest


def _assert_envelope(body: dict, status: int, rid: str) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code", "request_id"}
    assert err["request_id"] == rid
    assert "Traceback" not in err["message"]
    return err


@pytest.mark.parametrize("payload, status, param", [
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"[1,2,3]", 400, None),
    (b'{"model": "gpt-4o-mini"}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    (b'{"model": "mock", "messages": "hello"}', 400, "messages"),
    (b'{"model": "mock", "messages": []}', 400, "messages"),
    (b'{"model": "mock", "messages": [{"role": "wizard", "content": "x"}]}', 400, "messages[0].role"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": 5}]}', 400, "messages[0].content"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400,
     "temperature"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "temperature": 3}', 400,
     "temperature"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "stop": [1]}', 400, "stop"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "fallbacks": "gpt"}', 400,
     "fallbacks"),
    (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "task_type": "poetry"}', 400,
     "task_type"),
    (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    # control characters would reach the X-Gateway-Model header (a header injection aiohttp
    # refuses only after the vendor was called and billed), log lines and ledger rows
    (b'{"model": "mock/a\\nb", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    (b'{"model": "openai/gpt\\u0000x", "messages": [{"role": "user", "content": "x"}], "stream": true}', 400,
     "model"),
])
async def test_bad_chat_requests(gateway, payload, status, param):
    gw = await gateway({})
    async with gw.http.post(gw.url + "/v1/chat/completions", data=payload,
                            headers={"Content-Type": "application/json"}) as r:
        assert r.status == status
        err = _assert_envelope(await r.json(), status, r.headers["X-Request-ID"])
        assert err["param"] == param
    # the gateway still serves
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
        "model": "mock", "messages": [{"role": "user", "content": "still there?"}]}) as r:
        assert r.status == 200


async def test_oversized_body_is_413(gateway):
    gw = await gateway({"MAX_REQUEST_BYTES": "2048"})
    big = b'{"model": "mock", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'
    async with gw.http.post(gw.url + "/v1/chat/completions", data=big,
                            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        err = _assert_envelope(await r.json(), 413, r.headers["X-Request-ID"])
        assert "2048" in err["message"]
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
        "model": "mock", "messages": [{"role": "user", "content": "small"}]}) as r:
        assert r.status == 200


async def test_deep_json_is_refused(gateway):
    gw = await gateway({})
    deep = b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "metadata": ' + \
        b"[" * 200 + b"]" * 200 + b"}"
    async with gw.http.post(gw.url + "/v1/chat/completions", data=deep) as r:
        assert r.status == 400
        _assert_envelope(await r.json(), 400, r.headers["X-Request-ID"])


async def test_unknown_route_and_method(gateway):
    gw = await gateway({})
    async with gw.http.get(gw.url + "/v1/nope") as r:
        assert r.status == 404
        _assert_envelope(await r.json(), 404, r.headers["X-Request-ID"])
    async with gw.http.get(gw.url + "/v1/chat/completions") as r:
        assert r.status == 405
        _assert_envelope(await r.json(), 405, r.headers["X-Request-ID"])


async def test_bad_request_id_header_is_replaced(gateway):
    gw = await gateway({})
    async with gw.http.get(gw.url + "/healthz", headers={"X-Request-ID": "x" * 500}) as r:
        assert r.status == 200
        assert len(r.headers["X-Request-ID"]) == 36
        assert await r.json() == {"status": "ok"}


async def test_error_types_in_logs_are_readable_snake_case(gateway):
    """``error_type`` (logs, ledger, /api/requests) is the error class in snake case; an
    acronym stays one word: ``InvalidJSON`` is ``invalid_json``."""
    from llm_gateway import errors

    assert errors.InvalidJSON("x").error_type == "invalid_json"
    assert errors.UpstreamAuthFailed("x").error_type == "upstream_auth_failed"
    gw = await gateway({})
    async with gw.http.post(gw.url + "/v1/chat/completions", data=b"{not json",
                            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    assert [e["error_type"] for e in gw.events("error")] == ["invalid_json"]


@pytest.mark.parametrize("path, body", [
    ("/api/query", {"query": "x", "model": "mock/a\rb"}),
    ("/v1/gateway/query", {"query": "x", "model": "mock/a\u0001b"}),
    ("/v1/gateway/query", {"query": "x", "model": "mock", "model_version": "1\n2"}),
])
async def test_native_names_with_control_characters(gateway, path, body):
    gw = await gateway({})
    async with gw.http.post(gw.url + path, json=body) as r:
        assert r.status == 400
        err = _assert_envelope(await r.json(), 400, r.headers["X-Request-ID"])
        assert err["param"] in ("model", "model_version")
