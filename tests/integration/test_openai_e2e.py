"""End to end through the official openai SDK: gateway → fake OpenAI, stream and not."""

from __future__ import annotations

import asyncio
import sys

import openai
import orjson
import pytest

from tests.fakes.base import Fault


async def test_non_stream_through_sdk(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    client = gw.sdk()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        temperature=0.2, max_tokens=50, seed=7, stop=["\n\n"],
        extra_body={"fallbacks": ["mistral-small-latest"], "task_type": "text_generation", "cache": False,
                    "tenant": "team-a"},
        extra_headers={"X-Request-ID": "my-own-id-123"},
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hello from fake OpenAI."
    assert resp.model == "gpt-4o-mini-2024-07-18"
    # usage is the vendor's, plus our cost field
    assert resp.usage.prompt_tokens == 2 + 2 + 3 and resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == 11
    cost = resp.usage.model_extra["cost"]
    assert cost == pytest.approx((7 * 0.15 + 4 * 0.60) / 1e6)
    h = raw.headers
    assert h["x-request-id"] == "my-own-id-123"
    assert h["x-gateway-provider"] == "openai"
    assert h["x-gateway-model"] == "gpt-4o-mini"
    assert h["x-gateway-attempts"] == "1"
    assert h["x-gateway-cache"] in ("MISS", "BYPASS")
    assert float(h["x-gateway-cost-usd"]) == pytest.approx(cost)
    assert float(h["x-gateway-overhead-ms"]) >= 0
    # exactly what OpenAI received: auth form, fields, no gateway extensions
    got = fake_openai.last
    assert got.path == "/v1/chat/completions"
    assert got.headers["Authorization"] == f"Bearer {fake_openai.api_key}"
    assert got.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        "temperature": 0.2, "max_tokens": 50, "seed": 7, "stop": ["\n\n"],
    }
    assert "my-own-id-123" not in str(got.headers)


async def test_stream_through_sdk_with_usage(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    client = gw.sdk()
    stream = await client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}],
        stream=True, stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from fake OpenAI."
    assert finish == "stop"
    assert usage.prompt_tokens == 2 + 3 and usage.completion_tokens == 4
    assert usage.model_extra["cost"] > 0
    assert fake_openai.last.body["stream"] is True
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}


async def test_stream_without_usage_hides_usage_chunk(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
        "model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        body = (await r.read()).decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert '"usage":{' not in body  # the client did not ask for usage
    # but we asked upstream, so the log line has the vendor's numbers
    resp_line = gw.events("response")[-1]
    assert resp_line["input_tokens"] == 4 and resp_line["output_tokens"] == 4
    assert resp_line["estimated"] is False


_READ_TO_DONE = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
request = sys.stdin.buffer.read()
with socket.create_connection((host, port), timeout=10) as s:
    for _ in range(n):  # the same connection each time: it must have been kept
        s.sendall(request)
        got = b""
        while b"data: [DONE]" not in got:
            piece = s.recv(65536)
            if not piece:
                sys.exit("closed: " + repr(got[-200:]))
            got += piece
        sys.stdout.buffer.write(got[got.index(b"data: [DONE]"):] + b"|")
"""


async def test_stream_end_arrives_in_one_piece(gateway, vendor_env, fake_openai):
    """The usage chunk, [DONE] and the end of the chunked body leave in one write: a client
    that stops reading at [DONE] (aiohttp's SSE loops) finds the body complete and keeps
    its connection; one that reads on to the end (the openai SDK) waits for no second
    packet. The client is another process, reading as pieces arrive, so that every write
    the gateway makes could arrive on its own."""
    gw = await gateway(vendor_env)
    host, port = gw.url.split("//")[1].split(":")
    payload = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "hi"}]})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _READ_TO_DONE, host, port, "3",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(request), 30)
    assert proc.returncode == 0, err
    assert out.split(b"|")[:-1] == [b"data: [DONE]\n\n\r\n0\r\n\r\n"] * 3


async def test_n_choices_pass_through(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    resp = await gw.sdk().chat.completions.create(
        model="gpt-4o-mini", n=2, messages=[{"role": "user", "content": "two please"}])
    assert [c.index for c in resp.choices] == [0, 1]


async def test_vendor_4xx_is_returned_not_retried(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "Invalid 'messages[0].content': string too long.", "type": "invalid_request_error",
        "param": "messages[0].content", "code": "string_above_max_length"}}))
    with pytest.raises(openai.BadRequestError) as ei:
        await gw.sdk().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert "string too long" in ei.value.message
    assert ei.value.body["param"] == "messages[0].content"
    assert len(fake_openai.requests) == 1
    assert gw.sleeps == []


async def test_upstream_auth_failure_is_502_not_401(gateway, vendor_env, fake_openai):
    env = {**vendor_env, "OPENAI_API_KEY": "sk-wrong-key-abcdef"}
    gw = await gateway(env)
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 502
        body = await r.json()
    assert body["error"]["code"] == "upstream_auth_failed"
    assert "sk-wrong-key-abcdef" not in str(body)
    assert "sk-wrong-key-abcdef" not in gw.log_text()
    assert body["error"]["request_id"] == r.headers["X-Request-ID"]


async def test_retry_then_success_counts_attempts(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}))
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(gw.sleeps) == 1
    attempt = gw.events("attempt")
    assert attempt and attempt[0]["status"] == 500 and attempt[0]["provider"] == "openai"


async def test_secrets_never_logged(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    await gw.sdk().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    text = gw.log_text()
    for secret in vendor_env.values():
        if "KEY" in secret or secret.startswith("sk-"):
            assert secret not in text
    assert fake_openai.api_key not in text
    for line in gw.logs():
        if line.get("event") in ("request", "response", "error", "attempt"):
            assert line["request_id"]


@pytest.mark.parametrize("env,model,vendor_words", [
    ({"CLAUDE_API_KEY": "sk-ant-wrong-key-4444"}, "claude-3-5-haiku-latest", "invalid x-api-key"),
    ({"GEMINI_API_KEY": "AIza-wrong-key-4444"}, "gemini-2.0-flash", "API key not valid"),
    ({"OPENAI_API_KEY": "sk-wrong-key-4444"}, "gpt-4o-mini", "Incorrect API key"),
], ids=["anthropic", "gemini", "openai"])
async def test_a_refused_vendor_key_is_told_without_the_vendors_words(gateway, vendor_env, fake_openai,
                                                                       fake_anthropic, fake_gemini, env, model,
                                                                       vendor_words):
    """The client learns the gateway's key was refused; what the vendor said (which can
    quote a masked part of the key) is in the operator's log only."""
    gw = await gateway({**vendor_env, **env})
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 502
        body = await r.json()
    assert body["error"]["code"] == "upstream_auth_failed" and "check its API key" in body["error"]["message"]
    assert vendor_words not in str(body) and "4444" not in str(body)
    assert any(vendor_words in (e.get("detail") or "") for e in gw.events("error"))
