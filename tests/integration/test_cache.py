"""The response cache end to end, on the memory backend and on the real Redis (db 13).

Redis outages are played on a redis-server this test starts on a free port (or on a
closed port), never on the machine's own Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from llm_gateway.cache.backends import MemoryBackend, RedisBackend
from tests.fakes.base import Fault

REDIS_DB_URL = "redis://127.0.0.1:6379/13"
HI = [{"role": "user", "content": "Say hello"}]
REQ = {"model": "gpt-4o-mini", "messages": HI}


@pytest.fixture
async def redis_db() -> Any:
    r = aioredis.from_url(REDIS_DB_URL)
    try:
        await r.flushdb()
    except OSError:  # pragma: no cover - the machine's Redis is part of the test bed
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield r
    await r.flushdb()
    await r.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cache_env(request: pytest.FixtureRequest) -> Any:
    env: dict[str, Any] = {"CACHE_ENABLED": "true", "CACHE_TTL": "60"}
    if request.param == "memory":
        yield env
        return
    r = aioredis.from_url(REDIS_DB_URL)
    await r.flushdb()
    env.update({"CACHE_BACKEND": "redis", "REDIS_URL": REDIS_DB_URL, "_redis": r})
    yield env
    await r.flushdb()
    await r.aclose()


async def env_for(cache_env: dict[str, Any], vendor_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**vendor_env, **{k: v for k, v in cache_env.items() if not k.startswith("_")}, **extra}


async def post(gw, body: dict[str, Any], key: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
        raw = await r.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = raw.decode()
        return r.status, r.headers, data


# ---------------------------------------------------------------------- hit / miss / bypass
async def test_miss_then_hit(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    s1, h1, b1 = await post(gw, REQ)
    assert s1 == 200 and h1["X-Gateway-Cache"] == "MISS" and h1["X-Gateway-Attempts"] == "1"
    assert float(h1["X-Gateway-Cost-USD"]) > 0
    s2, h2, b2 = await post(gw, REQ)
    assert s2 == 200 and h2["X-Gateway-Cache"] == "HIT"
    assert h2["X-Gateway-Attempts"] == "0" and h2["X-Gateway-Cost-USD"] == "0"
    assert float(h2["X-Gateway-Overhead-Ms"]) >= 0
    assert (h2["X-Gateway-Provider"], h2["X-Gateway-Model"]) == ("openai", "gpt-4o-mini")
    assert h2["X-Request-ID"] != h1["X-Request-ID"]
    assert len(fake_openai.requests) == 1
    # the original answer with its original usage; this request's cost is 0
    assert b2["choices"] == b1["choices"] and b2["model"] == b1["model"] == "gpt-4o-mini-2024-07-18"
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert b2["usage"][k] == b1["usage"][k]
    assert b1["usage"]["cost"] > 0 and b2["usage"]["cost"] == 0
    hit = gw.events("response")[-1]
    assert hit["cache"] == "HIT" and hit["attempts"] == 0 and hit["cost_usd"] == "0"
    assert hit["input_tokens"] == b1["usage"]["prompt_tokens"] and hit["provider"] == "openai"
    if "_redis" in cache_env:
        assert await cache_env["_redis"].dbsize() == 1


async def test_bypass(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    for _ in range(2):
        _, h, _ = await post(gw, {**REQ, "cache": False})
        assert h["X-Gateway-Cache"] == "BYPASS" and h["X-Gateway-Attempts"] == "1"
    assert len(fake_openai.requests) == 2
    _, h, _ = await post(gw, REQ)  # a bypassing request neither reads nor writes
    assert h["X-Gateway-Cache"] == "MISS"
    _, h, _ = await post(gw, {**REQ, "cache": True})
    assert h["X-Gateway-Cache"] == "HIT"


@pytest.mark.parametrize("env", [{"CACHE_ENABLED": "false"}, {"CACHE_TTL": "0"}])
async def test_cache_off(gateway, vendor_env, fake_openai, env):
    gw = await gateway({**vendor_env, **env})
    for _ in range(2):
        _, h, _ = await post(gw, REQ)
        assert h["X-Gateway-Cache"] == "BYPASS"
    assert len(fake_openai.requests) == 2


async def test_key_ignores_what_cannot_change_the_answer(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    _, h, _ = await post(gw, {**REQ, "user": "alice", "temperature": 1})
    assert h["X-Gateway-Cache"] == "MISS"
    _, h, _ = await post(gw, {"messages": HI, "model": "openai/gpt-4o-mini", "user": "bob", "temperature": 1.0,
                              "metadata": {"x": "y"}, "fallbacks": ["mistral"], "task_type": "text_generation"})
    assert h["X-Gateway-Cache"] == "HIT"
    _, h, _ = await post(gw, {**REQ, "temperature": 0.5})
    assert h["X-Gateway-Cache"] == "MISS"
    _, h, _ = await post(gw, {**REQ, "temperature": 1, "seed": 3})
    assert h["X-Gateway-Cache"] == "MISS"
    assert len(fake_openai.requests) == 3


async def test_tenants_never_share_answers(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env, GATEWAY_API_KEYS="k1:team-a,k2:team-b"))
    a = gw.sdk(api_key="k1")
    b = gw.sdk(api_key="k2")
    r = await a.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert r.headers["x-gateway-cache"] == "MISS"
    r = await a.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert r.headers["x-gateway-cache"] == "HIT"
    fake_openai.text = "An answer for team b."
    r = await b.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert r.headers["x-gateway-cache"] == "MISS"
    assert r.parse().choices[0].message.content == "An answer for team b."
    r = await a.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert r.parse().choices[0].message.content == "Hello from fake OpenAI."
    assert len(fake_openai.requests) == 2
    tenants = {(e["tenant"]) for e in gw.events("request")}
    assert tenants == {"team-a", "team-b"}


async def test_ttl_expiry_on_the_injected_clock(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    await post(gw, REQ)
    gw.advance(59)
    _, h, _ = await post(gw, REQ)
    assert h["X-Gateway-Cache"] == "HIT"
    gw.advance(1.5)
    _, h, _ = await post(gw, REQ)
    assert h["X-Gateway-Cache"] == "MISS"  # expired: fetched again and stored afresh
    _, h, _ = await post(gw, REQ)
    assert h["X-Gateway-Cache"] == "HIT"
    assert len(fake_openai.requests) == 2


async def test_backend_ttl_really_expires(redis_db):
    """The backends' own TTL (aiocache memory: loop.call_later; Redis: PSETEX) frees the entry."""
    mem = MemoryBackend(10)
    red = RedisBackend(REDIS_DB_URL)
    try:
        for b in (mem, red):
            await b.set("llmgw:test:ttl", b"x", 0.05)
            assert await b.get("llmgw:test:ttl") == b"x"
        await asyncio.sleep(0.2)
        for b in (mem, red):
            assert await b.get("llmgw:test:ttl") is None
    finally:
        await mem.close()
        await red.close()


async def test_memory_backend_is_bounded(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "CACHE_MAX_ENTRIES": "2"})
    for word in ("one", "two", "three"):
        await post(gw, {**REQ, "messages": [{"role": "user", "content": word}]})
    _, h, _ = await post(gw, {**REQ, "messages": [{"role": "user", "content": "three"}]})
    assert h["X-Gateway-Cache"] == "HIT"
    _, h, _ = await post(gw, {**REQ, "messages": [{"role": "user", "content": "one"}]})
    assert h["X-Gateway-Cache"] == "MISS"  # the oldest entry made room


# ---------------------------------------------------------------------- streams
async def read_stream(stream) -> tuple[str, str | None, Any]:
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    return text, finish, usage


async def test_stream_is_stored_and_replayed(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    client = gw.sdk()
    kw = {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    raw = await client.chat.completions.with_raw_response.create(**kw)
    assert raw.headers["x-gateway-cache"] == "MISS"
    text1, finish1, usage1 = await read_stream(raw.parse())
    assert text1 == "Hello from fake OpenAI." and finish1 == "stop" and usage1.model_extra["cost"] > 0

    raw = await client.chat.completions.with_raw_response.create(**kw)
    assert raw.headers["x-gateway-cache"] == "HIT" and raw.headers["x-gateway-attempts"] == "0"
    assert raw.headers["x-gateway-cost-usd"] == "0"
    assert raw.headers["content-type"].startswith("text/event-stream")
    text2, finish2, usage2 = await read_stream(raw.parse())
    assert (text2, finish2) == (text1, finish1)
    assert (usage2.prompt_tokens, usage2.completion_tokens) == (usage1.prompt_tokens, usage1.completion_tokens)
    assert usage2.model_extra["cost"] == 0

    # the same answer for a non-stream request, and a stream without the usage chunk
    resp = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert resp.headers["x-gateway-cache"] == "HIT"
    msg = resp.parse()
    assert msg.choices[0].message.content == text1 and msg.choices[0].finish_reason == "stop"
    assert msg.usage.completion_tokens == usage1.completion_tokens
    async with gw.http.post(gw.url + "/v1/chat/completions", json={**REQ, "stream": True}) as r:
        assert r.headers["X-Gateway-Cache"] == "HIT"
        body = (await r.read()).decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and '"usage"' not in body
    assert len(fake_openai.requests) == 1


async def test_non_stream_answer_replays_as_stream(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    client = gw.sdk()
    first = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, n=2)
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, n=2, stream=True)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    async for chunk in stream:
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert texts == {c.index: c.message.content for c in first.choices}
    assert finishes == {0: "stop", 1: "stop"}
    assert len(fake_openai.requests) == 1


async def test_stream_of_every_provider_is_cached(gateway, vendor_env, fake_anthropic, fake_gemini,
                                                  fake_mistral):
    gw = await gateway(vendor_env)
    client = gw.sdk()
    for model, fake in (("claude-3-5-haiku-latest", fake_anthropic), ("gemini-2.0-flash", fake_gemini),
                        ("mistral-small-latest", fake_mistral), ("mock", None)):
        kw = {"model": model, "messages": HI, "stream": True}
        text1, finish1, _ = await read_stream(await client.chat.completions.create(**kw))
        raw = await client.chat.completions.with_raw_response.create(**kw)
        assert raw.headers["x-gateway-cache"] == "HIT", model
        text2, finish2, _ = await read_stream(raw.parse())
        assert (text2, finish2) == (text1, finish1) and text1, model
        if fake is not None:
            assert len(fake.requests) == 1, model


# ---------------------------------------------------------------------- never stored
async def test_errors_are_not_cached(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env, MAX_RETRIES="0"))
    fake_openai.inject(Fault(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}}),
                       Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}))
    s, h, _ = await post(gw, REQ)
    assert s == 400
    s, h, _ = await post(gw, REQ)
    assert s == 502
    s, h, _ = await post(gw, REQ)
    assert s == 200 and h["X-Gateway-Cache"] == "MISS"
    assert len(fake_openai.requests) == 3


async def test_stream_ending_in_error_is_not_cached(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env, MAX_RETRIES="0"))
    fake_openai.inject(Fault(cut_after=3), Fault(cut_after=1))  # the stream and its one recovery try
    async with gw.http.post(gw.url + "/v1/chat/completions", json={**REQ, "stream": True}) as r:
        body = (await r.read()).decode()
    assert "event: error" in body and "[DONE]" not in body
    s, h, b = await post(gw, REQ)
    assert h["X-Gateway-Cache"] == "MISS" and b["choices"][0]["message"]["content"] == "Hello from fake OpenAI."


async def test_fallback_answer_is_cached_under_the_requested_key(gateway, vendor_env, fake_openai, fake_mistral,
                                                                 cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env, MAX_RETRIES="0"))
    fake_openai.inject(Fault(status=500, body={"error": {"message": "boom", "type": "server_error"}}))
    req = {**REQ, "fallbacks": ["mistral-small-latest"]}
    _, h, b1 = await post(gw, req)
    assert h["X-Gateway-Cache"] == "MISS" and h["X-Gateway-Provider"] == "mistral"
    _, h, b2 = await post(gw, req)
    assert h["X-Gateway-Cache"] == "HIT" and h["X-Gateway-Provider"] == "mistral"
    assert h["X-Gateway-Model"] == "mistral-small-latest" and b2["choices"] == b1["choices"]
    assert len(fake_openai.requests) == 1 and len(fake_mistral.requests) == 1


# ---------------------------------------------------------------------- single-flight
async def test_single_flight_non_stream(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    fake_openai.inject(Fault(delay=0.3))
    results = await asyncio.gather(*(post(gw, REQ) for _ in range(6)))
    assert len(fake_openai.requests) == 1
    assert sorted(h["X-Gateway-Cache"] for _, h, _ in results) == ["HIT"] * 5 + ["MISS"]
    assert all(s == 200 for s, _, _ in results)
    assert len({orjson.dumps(b["choices"]) for _, _, b in results}) == 1
    attempts = sorted(h["X-Gateway-Attempts"] for _, h, _ in results)
    assert attempts == ["0"] * 5 + ["1"]


async def test_single_flight_streams_and_non_streams_share_one_call(gateway, vendor_env, fake_openai,
                                                                    cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    fake_openai.inject(Fault(delay=0.3))
    client = gw.sdk()

    async def streamed() -> str:
        text, finish, usage = await read_stream(await client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}))
        assert finish == "stop" and usage.completion_tokens == 4
        return text

    async def plain() -> str:
        return (await client.chat.completions.create(model="gpt-4o-mini", messages=HI)).choices[0].message.content

    texts = await asyncio.gather(streamed(), streamed(), plain(), streamed(), plain())
    assert texts == ["Hello from fake OpenAI."] * 5
    assert len(fake_openai.requests) == 1
    caches = sorted(e["cache"] for e in gw.events("response"))
    assert caches == ["HIT"] * 4 + ["MISS"]


async def test_single_flight_shares_the_error(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    fake_openai.inject(Fault(delay=0.3, status=400, body={"error": {"message": "nope", "type": "invalid_request_error"}}))
    results = await asyncio.gather(*(post(gw, REQ) for _ in range(4)))
    assert [s for s, _, _ in results] == [400] * 4
    assert len({b["error"]["message"] for _, _, b in results}) == 1 and "nope" in results[0][2]["error"]["message"]
    rids = {b["error"]["request_id"] for _, _, b in results}
    assert len(rids) == 4  # each follower renders the error with its own request id
    assert len(fake_openai.requests) == 1
    s, h, _ = await post(gw, REQ)  # the error was not stored
    assert s == 200 and h["X-Gateway-Cache"] == "MISS"


# ---------------------------------------------------------------------- Redis outages
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_redis(port: int) -> asyncio.subprocess.Process:
    exe = shutil.which("redis-server")
    if exe is None:  # pragma: no cover
        pytest.skip("redis-server is not installed")
    proc = await asyncio.create_subprocess_exec(
        exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    r = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(200):
            try:
                if await r.ping():
                    return proc
            except (OSError, RedisConnectionError):
                await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")
    finally:
        await r.aclose()


async def stop_redis(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def backend_lines(gw) -> list[dict[str, Any]]:
    return gw.events("cache_backend")


async def test_redis_unreachable_from_the_start(gateway, vendor_env, fake_openai):
    port = free_port()  # nothing listens there
    gw = await gateway({**vendor_env, "CACHE_BACKEND": "redis", "REDIS_URL": f"redis://:pw-s3cret@127.0.0.1:{port}/0"})
    for _ in range(3):
        s, h, _ = await post(gw, REQ)
        assert s == 200 and h["X-Gateway-Cache"] == "MISS"
    assert len(fake_openai.requests) == 3
    lines = backend_lines(gw)
    assert len(lines) == 1 and lines[0]["state"] == "down" and lines[0]["level"] == "warning"
    assert lines[0]["where"] == f"127.0.0.1:{port}/0"
    assert "pw-s3cret" not in gw.log_text()


async def test_redis_stopped_mid_run_then_back(gateway, vendor_env, fake_openai):
    port = free_port()
    proc = await start_redis(port)
    try:
        gw = await gateway({**vendor_env, "CACHE_BACKEND": "redis", "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        await post(gw, REQ)
        _, h, _ = await post(gw, REQ)
        assert h["X-Gateway-Cache"] == "HIT"

        await stop_redis(proc)
        for i in range(3):  # serving continues without the cache; one log line for the outage
            s, h, b = await post(gw, REQ)
            assert s == 200 and h["X-Gateway-Cache"] == "MISS"
            assert b["choices"][0]["message"]["content"] == "Hello from fake OpenAI."
        assert len(fake_openai.requests) == 4
        assert [ln["state"] for ln in backend_lines(gw)] == ["down"]
        gw.advance(6)  # past the back-off: one probe, still down, no new line
        await post(gw, REQ)
        assert [ln["state"] for ln in backend_lines(gw)] == ["down"]

        proc = await start_redis(port)
        await post(gw, REQ)  # inside the back-off window: the cache is not tried yet
        assert [ln["state"] for ln in backend_lines(gw)] == ["down"]
        gw.advance(6)
        _, h, _ = await post(gw, REQ)
        assert h["X-Gateway-Cache"] == "MISS"  # a fresh Redis: stored again
        assert [ln["state"] for ln in backend_lines(gw)] == ["down", "up"]
        _, h, _ = await post(gw, REQ)
        assert h["X-Gateway-Cache"] == "HIT"
        assert all(ln["request_id"] for ln in backend_lines(gw))
    finally:
        await stop_redis(proc)


# ---------------------------------------------------------------------- native endpoints
async def test_native_endpoints_use_the_same_cache(gateway, vendor_env, fake_openai, cache_env):
    gw = await gateway(await env_for(cache_env, vendor_env))
    q = {"query": "Say hello", "model": "gpt-4o-mini"}
    async with gw.http.post(gw.url + "/api/query", json=q) as r:
        b1 = await r.json()
        assert r.status == 200 and r.headers["X-Gateway-Cache"] == "MISS" and b1["cached"] is False
    async with gw.http.post(gw.url + "/api/query", json=q) as r:
        b2 = await r.json()
        assert r.headers["X-Gateway-Cache"] == "HIT" and r.headers["X-Gateway-Cost-USD"] == "0"
        assert r.headers["X-Gateway-Attempts"] == "0" and float(r.headers["X-Gateway-Overhead-Ms"]) >= 0
    assert b2["cached"] is True and b2["response"] == b1["response"]
    assert b2["token_usage"]["input_tokens"] == b1["token_usage"]["input_tokens"]
    async with gw.http.post(gw.url + "/v1/gateway/query", json=q) as r:
        b3 = await r.json()
    assert b3["cached"] is True and b3["metrics"]["cache"] == "HIT" and b3["metrics"]["attempts"] == 0
    assert b3["cost"]["actual_usd"] == 0
    # the same canonical request through the OpenAI surface: the same entry
    _, h, b4 = await post(gw, REQ)
    assert h["X-Gateway-Cache"] == "HIT" and b4["choices"][0]["message"]["content"] == b1["response"]
    assert len(fake_openai.requests) == 1


async def test_native_single_flight(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(delay=0.3))

    async def one() -> dict[str, Any]:
        async with gw.http.post(gw.url + "/api/query", json={"query": "together", "model": "gpt-4o-mini"}) as r:
            return await r.json()

    out = await asyncio.gather(*(one() for _ in range(4)))
    assert sorted(o["cached"] for o in out) == [False, True, True, True]
    assert len(fake_openai.requests) == 1


async def test_an_answer_cut_at_max_tokens_is_not_stored(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    body = {"model": "gpt-4o-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "long please"}]}
    for _ in range(2):
        async with gw.http.post(gw.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200 and (await r.json())["choices"][0]["finish_reason"] == "length"
            assert r.headers["X-Gateway-Cache"] == "MISS"
    assert len(fake_openai.requests) == 2
