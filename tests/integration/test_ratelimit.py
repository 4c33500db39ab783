"""Per-tenant and per-key limits: exact under concurrency, memory and Redis, shared
between two gateway processes, token reservation and reconciliation, headers, and the
Redis outage policy (fail open / fail closed, one log line per state change).

Redis tests use db 14 of the machine's Redis and a fresh tenant name per test (their
keys are deleted afterwards; nothing else in the db is touched). The outage tests use
an unused port or a redis-server of their own; the machine's Redis is never stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from llm_gateway.limits import limiter as limiter_mod
from llm_gateway.tokens import estimate_prompt_tokens
from tests.integration.test_cli_and_mock import free_port, start, stop, wait_healthy

REDIS_URL = "redis://127.0.0.1:6379/14"
KEY = "rl-test-key-0123456789"
KEY2 = "rl-test-key-second-9876"


def chat(text: str = "hello", **kw) -> dict:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], **kw}


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def post(gw, body: dict, key: str = KEY) -> tuple[int, dict[str, str], dict]:
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body, headers=auth(key)) as r:
        return r.status, dict(r.headers), await r.json()


def tenant_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_db():
    """The machine's Redis, db 14; skipped only outside CI when no Redis answers."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on 127.0.0.1:6379 (CI starts one)")
    created: list[str] = []
    yield created
    for tenant in created:
        async for k in client.scan_iter(match=f"llmgw:rl:*:{tenant}*"):
            await client.delete(k)
    await client.aclose()


# ---------------------------------------------------------------- memory store
async def test_requests_per_minute_exact_under_concurrency(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme", "CACHE_ENABLED": "false"},
                       config="[tenants.acme]\nrequests_per_minute = 5\n")
    results = await asyncio.gather(*(post(gw, chat(f"q{i}")) for i in range(6)))
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200] * 5 + [429]
    status, h, body = next(r for r in results if r[0] == 429)
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
    assert body["error"]["request_id"] == h["X-Request-ID"]
    assert "requests per minute" in body["error"]["message"] and "tenant 'acme'" in body["error"]["message"]
    assert int(h["Retry-After"]) == 12  # one request refills in 60/5 s
    assert h["x-ratelimit-limit-requests"] == "5" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1m0s"
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in results if s == 200)
    assert remaining == [0, 1, 2, 3, 4]
    # the bucket refills continuously: 12 s later exactly one more request passes
    gw.advance(12)
    assert (await post(gw, chat("again")))[0] == 200
    assert (await post(gw, chat("and again")))[0] == 429


async def test_per_key_limits_on_top_of_the_tenant(gateway):
    config = (f'[tenants.acme]\nrequests_per_minute = 10\n\n[[keys]]\nsha256 = "{sha(KEY2)}"\n'
              'tenant = "acme"\nname = "ci"\nrequests_per_minute = 2\n')
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme"}, config=config)
    assert [(await post(gw, chat(), KEY2))[0] for _ in range(3)] == [200, 200, 429]
    status, h, body = await post(gw, chat(), KEY2)
    assert status == 429 and "key 'ci'" in body["error"]["message"]
    # the tenant's other key still has the tenant's budget: 10 - 2 used by 'ci'
    statuses = [(await post(gw, chat(), KEY))[0] for _ in range(9)]
    assert statuses == [200] * 8 + [429]


async def test_unlimited_routes_and_tenants_have_no_headers(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme,{KEY2}:free"},
                       config="[tenants.acme]\nrequests_per_minute = 1\n")
    async with gw.http.get(gw.url + "/v1/models", headers=auth()) as r:
        assert r.status == 200 and "x-ratelimit-limit-requests" not in r.headers
    for _ in range(3):
        status, h, _ = await post(gw, chat(), KEY2)
        assert status == 200 and not any(k.lower().startswith("x-ratelimit") for k in h)


async def test_tokens_reserved_then_reconciled(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme", "CACHE_ENABLED": "false"},
                       config="[tenants.acme]\ntokens_per_minute = 1000\n")
    # max_tokens above the limit: the reservation is capped at the limit, so it is admitted
    status, h, body = await post(gw, chat("first question", max_tokens=5000))
    assert status == 200
    assert h["x-ratelimit-limit-tokens"] == "1000" and h["x-ratelimit-remaining-tokens"] == "0"
    used = body["usage"]["total_tokens"]
    assert 0 < used < 100
    # after the answer the reservation was reconciled with the actual usage
    msg = [{"role": "user", "content": "second question"}]
    status, h, body2 = await post(gw, chat("second question", max_tokens=50))
    assert status == 200
    reserved = estimate_prompt_tokens(msg) + 50
    assert int(h["x-ratelimit-remaining-tokens"]) == 1000 - used - reserved
    # no max_tokens: RATE_LIMIT_DEFAULT_OUTPUT_TOKENS (1024) capped at what the bucket can hold
    status, h, body3 = await post(gw, chat("third"))
    assert status == 429
    assert "tokens per minute" in body3["error"]["message"]
    assert int(h["Retry-After"]) >= 1


async def test_prompt_larger_than_the_limit_is_refused_without_retry_after(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme"}, config="[tenants.acme]\ntokens_per_minute = 50\n")
    status, h, body = await post(gw, chat("word " * 200))
    assert status == 429 and "Retry-After" not in h
    assert "too large" in body["error"]["message"]
    assert (await post(gw, chat("short", max_tokens=5)))[0] == 200


async def test_streams_carry_headers_and_are_reconciled(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme", "CACHE_ENABLED": "false"},
                       config="[tenants.acme]\nrequests_per_minute = 10\ntokens_per_minute = 2000\n")
    body = chat("stream please", stream=True, stream_options={"include_usage": True}, max_tokens=500)
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body, headers=auth()) as r:
        assert r.status == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "9"
        reserved = 2000 - int(r.headers["x-ratelimit-remaining-tokens"])
        assert reserved == estimate_prompt_tokens(body["messages"]) + 500
        await r.read()
    status, h, answer = await post(gw, chat("next", max_tokens=1))
    assert status == 200
    used_before = 2000 - int(h["x-ratelimit-remaining-tokens"]) - (estimate_prompt_tokens(
        [{"role": "user", "content": "next"}]) + 1)
    assert 0 < used_before < reserved  # the stream's unused reservation was given back


async def test_sdk_sees_rate_limit_error(gateway):
    import openai

    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme"}, config="[tenants.acme]\nrequests_per_minute = 1\n")
    client = gw.sdk(api_key=KEY)
    await client.chat.completions.create(**chat())
    with pytest.raises(openai.RateLimitError) as ei:
        await client.chat.completions.create(**chat())
    assert ei.value.body["code"] == "rate_limit_exceeded"
    assert ei.value.response.headers["retry-after"] == "60"


# ---------------------------------------------------------------- redis store
async def test_redis_limits_exact_under_concurrency(gateway, redis_db):
    tenant = tenant_name()
    redis_db.append(tenant)
    env = {"GATEWAY_API_KEYS": f"{KEY}:{tenant}", "RATE_LIMIT_BACKEND": "redis", "REDIS_URL": REDIS_URL,
           "CACHE_ENABLED": "false"}
    config = f"[tenants.{tenant}]\nrequests_per_minute = 10\n"
    gw1 = await gateway(env, config=config)
    gw2 = await gateway(env, config=config)  # a second app: shares nothing but Redis
    results = await asyncio.gather(*(post(gw1 if i % 2 else gw2, chat(f"q{i}")) for i in range(16)))
    assert sorted(s for s, _, _ in results) == [200] * 10 + [429] * 6
    refused = [h for s, h, _ in results if s == 429]
    assert all(5 <= int(h["Retry-After"]) <= 6 for h in refused)
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in results if s == 200) == list(range(10))


async def test_redis_tokens_reserved_and_reconciled(gateway, redis_db):
    tenant = tenant_name()
    redis_db.append(tenant)
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:{tenant}", "RATE_LIMIT_BACKEND": "redis",
                        "REDIS_URL": REDIS_URL, "CACHE_ENABLED": "false"},
                       config=f"[tenants.{tenant}]\ntokens_per_minute = 60000\n")
    status, h, body = await post(gw, chat("first", max_tokens=20000))
    first = 60000 - (estimate_prompt_tokens([{"role": "user", "content": "first"}]) + 20000)
    assert status == 200 and first <= int(h["x-ratelimit-remaining-tokens"]) <= first + 100
    used = body["usage"]["total_tokens"]
    status, h, _ = await post(gw, chat("second", max_tokens=10))
    expected = 60000 - used - (estimate_prompt_tokens([{"role": "user", "content": "second"}]) + 10)
    assert expected - 5 <= int(h["x-ratelimit-remaining-tokens"]) <= expected + 100  # refill while running


async def test_two_gateway_processes_share_one_redis(tmp_path: Path, redis_db):
    tenant = tenant_name()
    redis_db.append(tenant)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[tenants.{tenant}]\nrequests_per_minute = 6\n\n[[keys]]\nsha256 = "{sha(KEY)}"\n'
                   f'tenant = "{tenant}"\n')
    env = {"RATE_LIMIT_BACKEND": "redis", "REDIS_URL": REDIS_URL, "CACHE_ENABLED": "false",
           "GATEWAY_CONFIG": str(cfg)}
    ports = [free_port(), free_port()]
    procs = [(await start(["--port", str(p)], env, tmp_path))[0] for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s:
            async def one(i: int) -> int:
                async with s.post(urls[i % 2] + "/v1/chat/completions", json=chat(f"q{i}"), headers=auth()) as r:
                    await r.read()
                    return r.status
            statuses = await asyncio.gather(*(one(i) for i in range(8)))
        assert sorted(statuses) == [200] * 6 + [429] * 2
    finally:
        for proc in procs:
            await stop(proc)


# ---------------------------------------------------------------- redis outage
def outage_env(port: int, fail_open: bool) -> dict[str, str]:
    return {"GATEWAY_API_KEYS": f"{KEY}:acme", "RATE_LIMIT_BACKEND": "redis",
            "REDIS_URL": f"redis://127.0.0.1:{port}/0", "RATE_LIMIT_FAIL_OPEN": str(fail_open).lower(),
            "CACHE_ENABLED": "false"}


def store_events(gw) -> list[dict]:
    return [e for e in gw.logs() if e.get("event") == "rate_limit_store"]


async def test_redis_down_fails_open_to_per_process_limits(gateway, monkeypatch):
    monkeypatch.setattr(limiter_mod, "REDIS_RETRY_S", 0.0)  # ask the dead store every time
    gw = await gateway(outage_env(free_port(), True), config="[tenants.acme]\nrequests_per_minute = 3\n")
    statuses = [(await post(gw, chat(f"q{i}")))[0] for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # this process's own buckets still hold
    events = store_events(gw)
    assert len(events) == 1 and events[0]["state"] == "down" and events[0]["level"] == "warning"
    assert "failing open" in events[0]["message"]


async def test_redis_down_fails_closed(gateway, monkeypatch):
    monkeypatch.setattr(limiter_mod, "REDIS_RETRY_S", 0.0)
    gw = await gateway(outage_env(free_port(), False), config="[tenants.acme]\nrequests_per_minute = 3\n")
    for _ in range(3):
        status, h, body = await post(gw, chat())
        assert status == 503
        assert body["error"]["code"] == "rate_limiter_unavailable" and h["Retry-After"] == "1"
        assert body["error"]["request_id"] == h["X-Request-ID"]
    async with gw.http.get(gw.url + "/v1/models", headers=auth()) as r:
        assert r.status == 200  # routes without limits are not affected
    assert [e["state"] for e in store_events(gw)] == ["down"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
async def test_redis_outage_and_recovery_logged_once_per_change(gateway, monkeypatch, tmp_path):
    monkeypatch.setattr(limiter_mod, "REDIS_RETRY_S", 0.0)
    port = free_port()

    async def run_redis() -> subprocess.Popen:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return proc
            except OSError:
                await asyncio.sleep(0.05)
        proc.kill()
        raise AssertionError("redis-server did not start")

    redis = await run_redis()
    try:
        gw = await gateway(outage_env(port, True), config="[tenants.acme]\nrequests_per_minute = 100\n")
        assert (await post(gw, chat("a")))[1]["x-ratelimit-remaining-requests"] == "99"
        redis.terminate()
        redis.wait(10)
        for i in range(3):
            assert (await post(gw, chat(f"down{i}")))[0] == 200
        redis = await run_redis()
        for i in range(3):
            assert (await post(gw, chat(f"up{i}")))[0] == 200
        assert [e["state"] for e in store_events(gw)] == ["down", "up"]
    finally:
        redis.terminate()
        redis.wait(10)


async def test_native_query_endpoints_share_the_tenant_limits(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme", "CACHE_ENABLED": "false"},
                       config="[tenants.acme]\nrequests_per_minute = 3\ntokens_per_minute = 100000\n")
    statuses = []
    for path, body in (("/api/query", {"query": "one", "model": "mock"}),
                       ("/v1/gateway/query", {"query": "two", "model": "mock"}),
                       ("/v1/chat/completions", chat("three")),
                       ("/api/query", {"query": "four", "model": "mock"})):
        async with gw.http.post(gw.url + path, json=body, headers=auth()) as r:
            statuses.append(r.status)
            assert r.headers["x-ratelimit-limit-requests"] == "3"
            assert "x-ratelimit-remaining-tokens" in r.headers
    assert statuses == [200, 200, 200, 429]


async def test_without_keys_the_default_and_body_tenants_are_limited(gateway):
    """No gateway keys: a request is the "default" tenant's (as in the ledger and budgets),
    or the tenant its /v1/gateway/query body names; their limits apply."""
    gw = await gateway({"CACHE_ENABLED": "false"},
                       config="[tenants.default]\nrequests_per_minute = 2\n"
                              "[tenants.alpha]\nrequests_per_minute = 1\n")
    statuses = []
    for i in range(3):
        async with gw.http.post(gw.url + "/v1/chat/completions", json=chat(f"d{i}")) as r:
            statuses.append(r.status)
            assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert statuses == [200, 200, 429]
    statuses = []
    for i in range(2):
        async with gw.http.post(gw.url + "/v1/gateway/query",
                                json={"query": f"a{i}", "model": "mock", "tenant": "alpha"}) as r:
            statuses.append(r.status)
            assert r.headers["x-ratelimit-limit-requests"] == "1"
            if r.status == 429:
                assert "tenant 'alpha'" in (await r.json())["error"]["message"]
    assert statuses == [200, 429]


async def test_a_chat_body_may_name_its_tenant_without_keys(gateway):
    """SPEC 5's body ``tenant`` on chat too: honoured without keys (limits, ledger), never
    forwarded to the vendor (OpenAI would refuse the unknown field)."""
    gw = await gateway({"CACHE_ENABLED": "false"}, config="[tenants.alpha]\nrequests_per_minute = 1\n")
    statuses = []
    for i in range(2):
        async with gw.http.post(gw.url + "/v1/chat/completions", json=chat(f"a{i}", tenant="alpha")) as r:
            statuses.append(r.status)
            assert r.headers["x-ratelimit-limit-requests"] == "1"
    assert statuses == [200, 429]
    async with gw.http.post(gw.url + "/v1/chat/completions", json=chat("d")) as r:
        assert r.status == 200 and "x-ratelimit-limit-requests" not in r.headers  # "default" has no limits
    async with gw.http.post(gw.url + "/v1/chat/completions", json=chat("bad", tenant="")) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "tenant"
    assert {e["tenant"] for e in gw.events("request")} == {"alpha", None}  # None: no key, no body tenant


async def test_a_chat_body_cannot_name_another_tenant_than_the_key(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": f"{KEY}:acme", "CACHE_ENABLED": "false"})
    async with gw.http.post(gw.url + "/v1/chat/completions", json=chat("x", tenant="beta"), headers=auth()) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "tenant_mismatch"
    async with gw.http.post(gw.url + "/v1/chat/completions", json=chat("x", tenant="acme"), headers=auth()) as r:
        assert r.status == 200
