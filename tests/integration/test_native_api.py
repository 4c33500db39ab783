"""The gateway-native API through real HTTP with the fake vendors (SPEC 5).

/api/query, /api/status, /v1/gateway/query (dry_run, max_cost_usd, model_version,
tenant), /v1/gateway/cost-estimate, /v1/gateway/usage, /v1/gateway/requests, and
per-tenant budgets under concurrent requests.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pytest import approx
from aiohttp import web

from llm_gateway.budget import worst_case
from llm_gateway.keys import BUDGETS, RESOLVER
from llm_gateway.tokens import estimate_prompt_tokens
from tests.fakes.base import Fault
from tests.fakes.openai import FakeOpenAI

D = Decimal
Q = "What is two plus two?"  # 5 words: the fake OpenAI counts 5 + 3 prompt tokens
FAKE_USAGE = {"prompt_tokens": 8, "completion_tokens": 4}  # "Hello from fake OpenAI." = 4 words
FAKE_COST = (8 * D("0.15") + 4 * D("0.60")) / 1_000_000  # gpt-4o-mini: $0.0000036
OA_500 = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
EXTRA = '[providers.local]\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["llama3.2"]\n'


async def call(gw: Any, method: str, path: str, payload: Any = None, **kw: Any) -> tuple[int, dict, Any]:
    async with gw.http.request(method, gw.url + path, json=payload, **kw) as r:
        raw = await r.read()
        return r.status, dict(r.headers), orjson.loads(raw) if raw else None


def post(gw: Any, path: str, payload: Any, **kw: Any):
    return call(gw, "POST", path, payload, **kw)


def get(gw: Any, path: str, **kw: Any):
    return call(gw, "GET", path, **kw)


# ---------------------------------------------------------------- /api/query
async def test_api_query_answers_with_vendor_usage(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, h, body = await post(gw, "/api/query", {"query": Q, "request_id": "legacy-42"})
    assert status == 200, body
    assert body["response"] == "Hello from fake OpenAI."
    assert (body["provider"], body["model"]) == ("openai", "gpt-4o-mini")  # auto → text_generation's first
    assert body["request_id"] == "legacy-42" and h["X-Request-ID"] == "legacy-42"
    assert body["cached"] is False and body["response_time_ms"] > 0
    assert body["num_tokens"] == 12
    assert body["token_usage"] == {
        "input_tokens": 8, "output_tokens": 4, "total_tokens": 12, "estimated": False,
        "buckets": {"input": 8, "cached_input": 0, "output": 4, "reasoning": 0, "total": 12}}
    assert body["finish_reason"] == "stop"
    assert D(h["X-Gateway-Cost-USD"]) == FAKE_COST and h["X-Gateway-Provider"] == "openai"
    assert fake_openai.last.body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": Q}]}
    # every log line of the request carries the body's request id
    assert {r["request_id"] for r in gw.logs() if r.get("event") in ("request", "response")} == {"legacy-42"}


@pytest.mark.parametrize("model, provider", [("claude", "anthropic"), ("gemini", "gemini"),
                                             ("mistral-small-latest", "mistral"), ("openai/gpt-4o", "openai")])
async def test_api_query_model_is_alias_or_id(gateway, vendor_env, model, provider):
    gw = await gateway(vendor_env)
    status, h, body = await post(gw, "/api/query", {"query": "hello there", "model": model})
    assert status == 200, body
    assert body["provider"] == provider and body["response"]
    assert body["token_usage"]["estimated"] is False and body["num_tokens"] > 0


async def test_api_query_cache_hit_says_cached(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    first = await post(gw, "/api/query", {"query": Q, "model": "openai"})
    second = await post(gw, "/api/query", {"query": Q, "model": "openai"})
    assert first[2]["cached"] is False and second[2]["cached"] is True
    assert second[2]["response"] == first[2]["response"]
    assert second[2]["token_usage"] == first[2]["token_usage"]  # what the answer represents
    assert second[1]["X-Gateway-Cost-USD"] == "0" and second[1]["X-Gateway-Cache"] == "HIT"
    assert len(fake_openai.requests) == 1


async def test_api_query_mock_only(gateway):
    gw = await gateway({})
    status, _, body = await post(gw, "/api/query", {"query": "hi"})
    assert status == 200 and body["provider"] == "mock" and "simulated" in body["response"]


@pytest.mark.parametrize("payload, param", [
    ({}, "query"), ({"query": ""}, "query"), ({"query": 3}, "query"), ({"query": "x", "model": ""}, "model"),
    ({"query": "x", "task_type": "poetry"}, "task_type"), ({"query": "x", "request_id": "é" * 3}, "request_id"),
    ({"query": "x", "request_id": "x" * 129}, "request_id"), ({"query": "x", "temperature": 1}, "temperature"),
])
async def test_api_query_bad_input(gateway, vendor_env, fake_openai, payload, param):
    gw = await gateway(vendor_env)
    status, _, body = await post(gw, "/api/query", payload)
    assert status == 400 and body["error"]["param"] == param
    assert fake_openai.requests == []


async def test_api_query_not_json(gateway, vendor_env):
    gw = await gateway(vendor_env)
    async with gw.http.post(gw.url + "/api/query", data=b"{nope") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"


# ---------------------------------------------------------------- /api/status
async def test_status_lists_every_provider_with_health(gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "0"}, config=EXTRA)
    fake_openai.inject(*[Fault(status=500, body=OA_500)] * 3)
    for _ in range(3):
        status, _, _ = await post(gw, "/api/query", {"query": "x", "model": "openai"})
        assert status == 502
    fake_anthropic.inject(Fault(status=429, body={"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}}))
    await post(gw, "/api/query", {"query": "x", "model": "claude"})
    await post(gw, "/api/query", {"query": "y", "model": "gemini"})
    status, _, body = await get(gw, "/api/status")
    assert status == 200
    p = body["providers"]
    assert set(p) == {"openai", "anthropic", "gemini", "mistral", "mock", "local"}
    oa = p["openai"]
    assert oa["configured"] is True and oa["circuit"] == "open" and oa["available"] is False
    assert oa["errors"] == 3 and "server" in oa["last_error"].lower()
    assert p["anthropic"]["rate_limited"] == 1
    assert p["gemini"]["circuit"] == "closed" and p["gemini"]["available"] is True
    assert p["gemini"]["latency_ms_p50"] is not None and p["gemini"]["requests"] == 1
    assert p["mock"]["simulated"] is True and p["mock"]["configured"] is True
    assert p["local"]["configured"] is True and p["local"]["kind"] == "openai"
    assert p["local"]["default_model"] == "llama3.2"
    assert body["ledger"]["backend"].startswith("sqlite:") and body["ledger"]["failing"] is False
    raw = orjson.dumps(body).decode()
    for key in (fake_openai.api_key, fake_anthropic.api_key):
        assert key not in raw


async def test_status_without_keys_is_not_configured(gateway):
    gw = await gateway({})
    _, _, body = await get(gw, "/api/status")
    assert body["mock_only"] is True
    assert body["providers"]["openai"] == {**body["providers"]["openai"], "configured": False, "available": False}


# ---------------------------------------------------------------- /v1/gateway/query
async def test_gateway_query_cost_and_metrics(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, h, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o-mini", "request_id": "g-1"})
    assert status == 200, body
    assert body["response"] == "Hello from fake OpenAI." and body["request_id"] == "g-1"
    pt = estimate_prompt_tokens([{"role": "user", "content": Q}])
    cost = body["cost"]
    assert cost["estimated_usd"] == approx(float((pt * D("0.15") + 16384 * D("0.60")) / 1_000_000))  # worst case
    assert cost["max_output_tokens"] == 16384 and cost["max_output_tokens_basis"] == "model_max_output_tokens"
    assert cost["actual_usd"] == approx(float(FAKE_COST)) and D(h["X-Gateway-Cost-USD"]) == FAKE_COST
    assert cost["currency"] == "USD" and cost["priced"] is True
    m = body["metrics"]
    assert m["attempts"] == 1 and m["fallback_used"] is False and m["cache"] == "MISS" and m["latency_ms"] > 0
    assert body["dry_run"] is False and body["num_tokens"] == 12


async def test_dry_run_makes_no_upstream_call(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "dry_run": True,
                                                            "max_tokens": 100})
    assert status == 200, body
    assert fake_openai.requests == []
    pt = estimate_prompt_tokens([{"role": "user", "content": Q}])
    assert body["dry_run"] is True and body["response"] is None and body["model"] == "gpt-4o"
    assert body["cost"]["estimated_usd"] == approx(float((pt * D("2.50") + 100 * D("10.00")) / 1_000_000))
    assert body["cost"]["actual_usd"] is None and body["metrics"]["attempts"] == 0
    assert body["token_usage"] == {"input_tokens": pt, "output_tokens": 0, "total_tokens": pt, "estimated": True}
    _, _, recent = await get(gw, "/v1/gateway/requests")
    assert recent["data"] == []  # nothing was spent: no ledger row


async def test_estimates_need_no_configured_provider(gateway):
    """A gateway with no vendor key (the mock only): dry runs and the max_cost_usd refusal
    still answer from the catalog; a real call to that model is the configuration error."""
    gw = await gateway({})
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "dry_run": True,
                                                            "max_tokens": 100})
    assert status == 200 and body["dry_run"] is True and body["provider"] == "openai", body
    assert body["cost"]["estimated_usd"] > 0
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "max_cost_usd": 0.0001})
    assert status == 402 and body["error"]["code"] == "cost_limit_exceeded", body
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "max_cost_usd": 5})
    assert status == 400 and body["error"]["code"] == "provider_not_configured", body
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o"})
    assert status == 400 and body["error"]["code"] == "provider_not_configured", body


async def test_max_cost_refused_with_402_and_no_upstream_call(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "max_cost_usd": 0.01})
    # worst case: 16384 output tokens x $10/1M = $0.16384 > $0.01
    assert status == 402, body
    assert body["error"]["code"] == "cost_limit_exceeded" and body["error"]["param"] == "max_cost_usd"
    assert "max_tokens" in body["error"]["message"]
    assert fake_openai.requests == []
    # the same query capped at 100 output tokens fits: $0.001 + input
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "max_cost_usd": "0.01",
                                                            "max_tokens": 100})
    assert status == 200 and len(fake_openai.requests) == 1
    assert fake_openai.last.body["max_tokens"] == 100


async def test_max_cost_with_dry_run_and_exact_boundary(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    _, _, est = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o-mini", "dry_run": True,
                                                      "max_tokens": 10})
    limit = est["cost"]["estimated_usd"]
    status, _, _ = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o-mini", "dry_run": True,
                                                         "max_tokens": 10, "max_cost_usd": limit})
    assert status == 200  # equal to the limit is allowed
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o-mini", "dry_run": True,
                                                            "max_tokens": 11, "max_cost_usd": limit})
    assert status == 402 and body["error"]["code"] == "cost_limit_exceeded"
    assert fake_openai.requests == []


async def test_max_cost_on_an_unpriced_model_is_a_clear_400(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "gpt-4o", "model_version": "2099-01-01",
                                                            "max_cost_usd": 1})
    assert status == 400 and body["error"]["code"] == "unpriced_model"
    assert "openai/gpt-4o-2099-01-01" in body["error"]["message"]
    assert fake_openai.requests == []


@pytest.mark.parametrize("model, version, provider, sent, priced", [
    ("claude-3-5-haiku", "20241022", "anthropic", "claude-3-5-haiku-20241022", True),  # catalog alias
    ("gpt-4o", "2024-08-06", "openai", "gpt-4o-2024-08-06", True),
    ("openai/gpt-4o", "2024-08-06", "openai", "gpt-4o-2024-08-06", True),
    ("anthropic", "claude-3-opus-20240229", "anthropic", "claude-3-opus-20240229", False),  # full id on a provider
    ("gpt-4o", "gpt-4o-2024-11-20", "openai", "gpt-4o-2024-11-20", False),  # already the full id
    ("gpt-4o", "2024-11-20", "openai", "gpt-4o-2024-11-20", False),  # not in the catalog: forwarded, unpriced
    ("gpt-4.1", "mini", "openai", "gpt-4.1-mini", True),
])
async def test_model_version(gateway, vendor_env, fake_openai, fake_anthropic, model, version, provider, sent,
                             priced):
    gw = await gateway(vendor_env)
    status, h, body = await post(gw, "/v1/gateway/query", {"query": "hi", "model": model, "model_version": version})
    assert status == 200, body
    fake = fake_openai if provider == "openai" else fake_anthropic
    assert fake.last.body["model"] == sent  # the pinned version itself, never swapped for the main id
    assert (body["provider"], body["model"], h["X-Gateway-Model"]) == (provider, sent, sent)
    assert body["cost"]["priced"] is priced and (body["cost"]["actual_usd"] is not None) is priced


@pytest.mark.parametrize("payload, status, code", [
    ({"query": "x", "model": "auto", "model_version": "1"}, 400, "invalid_value"),
    ({"query": "x", "model": "no-such-model", "model_version": "1"}, 404, "model_not_found"),
    ({"query": "x", "model": "gpt-4o", "model_version": "a b"}, 400, "invalid_value"),
    ({"query": "x"}, 400, "missing_required_parameter"),
    ({"query": "x", "model": "gpt-4o", "max_cost_usd": -1}, 400, "invalid_value"),
    ({"query": "x", "model": "gpt-4o", "max_cost_usd": "1e400x"}, 400, "invalid_value"),
    ({"query": "x", "model": "gpt-4o", "dry_run": "yes"}, 400, "invalid_type"),
    ({"query": "x", "model": "gpt-4o", "max_tokens": 0}, 400, "invalid_value"),
    ({"query": "x", "model": "gpt-4o", "max_cost": 1}, 400, "unknown_parameter"),
])
async def test_gateway_query_bad_input(gateway, vendor_env, fake_openai, payload, status, code):
    gw = await gateway(vendor_env)
    got, _, body = await post(gw, "/v1/gateway/query", payload)
    assert (got, body["error"]["code"]) == (status, code)
    assert fake_openai.requests == []


async def test_body_tenant_without_keys_is_used(gateway, vendor_env):
    gw = await gateway(vendor_env)
    await post(gw, "/v1/gateway/query", {"query": Q, "model": "openai", "tenant": "team-a"})
    await post(gw, "/api/query", {"query": "other", "model": "openai"})
    _, _, data = await get(gw, "/v1/gateway/requests")
    assert [r["tenant"] for r in data["data"]] == ["default", "team-a"]


KEYS = {"GATEWAY_API_KEYS": "key-acme-0123456789:acme,key-globex-0123456789:globex"}
ACME = {"Authorization": "Bearer key-acme-0123456789"}
GLOBEX = {"x-api-key": "key-globex-0123456789"}


async def test_with_keys_the_keys_tenant_applies(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, **KEYS})
    status, _, body = await post(gw, "/v1/gateway/query", {"query": Q, "model": "openai", "tenant": "globex"},
                                 headers=ACME)
    assert status == 403 and body["error"]["code"] == "tenant_mismatch" and body["error"]["param"] == "tenant"
    assert fake_openai.requests == []
    status, _, _ = await post(gw, "/v1/gateway/query", {"query": Q, "model": "openai", "tenant": "acme"},
                              headers=ACME)
    assert status == 200
    await post(gw, "/api/query", {"query": "from globex", "model": "openai"}, headers=GLOBEX)
    # reads: a key sees its own tenant only
    _, _, mine = await get(gw, "/v1/gateway/requests", headers=ACME)
    assert {r["tenant"] for r in mine["data"]} == {"acme"} and mine["tenant"] == "acme"
    status, _, body = await get(gw, "/v1/gateway/usage?tenant=globex", headers=ACME)
    assert status == 403
    _, _, usage = await get(gw, "/v1/gateway/usage?group_by=tenant", headers=GLOBEX)
    assert [g["tenant"] for g in usage["groups"]] == ["globex"]
    status, _, _ = await get(gw, "/v1/gateway/usage")
    assert status == 401


# ---------------------------------------------------------------- /v1/gateway/cost-estimate
async def test_cost_estimate_by_hand(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    status, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": Q, "model": "gpt-4o-mini",
                                                                    "expected_response_tokens": 1000})
    assert status == 200, body
    pt = estimate_prompt_tokens([{"role": "user", "content": Q}])
    inp = pt * D("0.15") / 1_000_000
    assert body["input_tokens"] == pt and body["expected_output_tokens"] == 1000
    assert body["expected_output_tokens_basis"] == "expected_response_tokens"
    assert (body["input_per_1m"], body["output_per_1m"], body["cached_input_per_1m"]) == (0.15, 0.6, 0.075)
    assert body["input_cost_usd"] == approx(float(inp)) and body["output_cost_usd"] == approx(0.0006)
    assert body["total_cost_usd"] == approx(float(inp + D("0.0006")))
    assert (body["model"], body["provider"], body["currency"], body["priced"]) == ("gpt-4o-mini", "openai", "USD", True)
    assert body["prices_as_of"] and body["price_source"]
    assert fake_openai.requests == []


async def test_cost_estimate_defaults_to_the_model_output_cap(gateway, vendor_env):
    gw = await gateway(vendor_env)
    _, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": Q, "model": "gpt-4o-mini"})
    assert body["expected_output_tokens"] == 16384 and body["output_cost_usd"] == approx(0.0098304)
    _, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": Q, "model": "mistral-small-latest"})
    assert body["expected_output_tokens"] == 4096 and body["expected_output_tokens_basis"] == "default"


async def test_cost_estimate_needs_no_key_and_knows_versions(gateway):
    gw = await gateway({})  # no vendor configured: estimates still work
    status, _, body = await post(gw, "/v1/gateway/cost-estimate", {
        "query": "hi", "model": "claude-3-5-haiku", "model_version": "20241022", "expected_response_tokens": 10})
    assert status == 200, body
    assert (body["model"], body["provider"], body["input_per_1m"]) == ("claude-3-5-haiku-20241022", "anthropic", 0.8)
    assert body["output_cost_usd"] == approx(0.00004)


async def test_cost_estimate_unpriced_and_unknown(gateway, vendor_env):
    gw = await gateway(vendor_env, config=EXTRA)
    status, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": "hi", "model": "local/llama3.2"})
    assert status == 200 and body["priced"] is False
    assert body["total_cost_usd"] is None and body["input_per_1m"] is None and "no price" in body["message"]
    assert body["input_tokens"] > 0
    status, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": "hi", "model": "nope-1"})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, _, body = await post(gw, "/v1/gateway/cost-estimate", {"query": "hi", "model": "gpt-4o",
                                                                    "expected_response_tokens": -1})
    assert status == 400 and body["error"]["param"] == "expected_response_tokens"


# ---------------------------------------------------------------- the ledger through the API
async def test_usage_and_requests_from_the_ledger(gateway, vendor_env, fake_openai):
    gw = await gateway(vendor_env)
    for i in range(3):
        status, _, _ = await post(gw, "/v1/gateway/query", {"query": f"what is {i} plus two?", "model": "openai",
                                                            "request_id": f"r{i}"})
        assert status == 200
    await post(gw, "/api/query", {"query": "what is 0 plus two?", "model": "openai", "request_id": "hit"})  # cached
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "stream me now"}],
            "cache": False}, headers={"X-Request-ID": "s1"}) as r:
        assert r.status == 200
        await r.read()

    status, _, recent = await get(gw, "/v1/gateway/requests?limit=4")
    assert status == 200
    rows = recent["data"]
    assert [r["request_id"] for r in rows] == ["s1", "hit", "r2", "r1"]  # newest first
    s1, hit, r2 = rows[0], rows[1], rows[2]
    assert s1["endpoint"] == "/v1/chat/completions" and s1["cost_usd"] == approx(float((6 * D("0.15") + 4 * D("0.60")) / 10**6))
    assert s1["tokens"] == {"input": 6, "cached_input": 0, "output": 4, "reasoning": 0, "total": 10}
    assert hit["cache"] == "HIT" and hit["cost_usd"] == 0 and hit["tokens"]["total"] == 0 and hit["attempts"] == 0
    assert r2 == {**r2, "endpoint": "/v1/gateway/query", "tenant": "default", "provider": "openai",
                  "model": "gpt-4o-mini", "status": 200, "attempts": 1, "cache": "MISS", "estimated": False,
                  "cost_usd": approx(0.0000036)}
    assert r2["latency_ms"] > 0 and r2["time"].endswith("Z")
    raw = orjson.dumps(recent).decode()
    assert "plus two" not in raw and "Hello from fake" not in raw  # never prompt or answer text

    status, _, u = await get(gw, "/v1/gateway/usage?group_by=tenant,model,day")
    assert status == 200
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert u["groups"] == [{"tenant": "default", "model": "gpt-4o-mini", "day": today, "requests": 5, "errors": 0,
                            "cache_hits": 1, "unpriced_requests": 0, "spend_usd": u["totals"]["spend_usd"],
                            "tokens": u["totals"]["tokens"]}]
    assert u["totals"]["spend_usd"] == approx(float(3 * D("0.0000036") + D("0.0000033")))
    assert u["totals"]["tokens"] == {"input": 30, "cached_input": 0, "output": 16, "reasoning": 0, "total": 46}
    assert u["currency"] == "USD"

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    _, _, none = await get(gw, f"/v1/gateway/usage?from={tomorrow}")
    assert none["totals"]["requests"] == 0 and none["totals"]["spend_usd"] == 0
    _, _, none = await get(gw, f"/v1/gateway/usage?to={yesterday}")
    assert none["totals"]["requests"] == 0
    _, _, all_ = await get(gw, f"/v1/gateway/usage?from={today}&to={today}")  # a date `to` includes the day
    assert all_["totals"]["requests"] == 5 and all_["groups"] == []
    basic = today.replace("-", "")  # ISO 8601's basic form is the same whole day
    _, _, all_ = await get(gw, f"/v1/gateway/usage?from={basic}&to={basic}")
    assert all_["totals"]["requests"] == 5
    _, _, some = await get(gw, f"/v1/gateway/usage?from={today}T00:00:00Z&to={tomorrow}T00:00:00%2B00:00")
    assert some["totals"]["requests"] == 5


@pytest.mark.parametrize("query, param", [
    ("from=yesterday", "from"), ("to=2025-13-01", "to"), ("group_by=week", "group_by"),
    ("group_by=day,day", "group_by"), ("from=2025-06-02&to=2025-06-01", "from"), ("limit=3", "limit"),
    ("tenant=", "tenant"), ("to=2025-06-01T25:00:00Z", "to"),
])
async def test_usage_validation(gateway, query, param):
    gw = await gateway({})
    status, _, body = await get(gw, "/v1/gateway/usage?" + query)
    assert status == 400 and body["error"]["param"] == param, body


@pytest.mark.parametrize("query", ["to=9999-12-31", "from=0001-01-01T00:00:00%2B05:00", "from=0001-01-01",
                                   "to=9999-12-31T23:59:59-05:00"])
async def test_usage_at_the_ends_of_the_calendar(gateway, query):
    gw = await gateway({})
    status, _, body = await get(gw, "/v1/gateway/usage?" + query)
    assert status == 200 and body["totals"]["requests"] == 0, body
    status, _, st = await get(gw, "/api/status")
    assert status == 200 and not (st.get("ledger") or {}).get("last_error"), st.get("ledger")


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
async def test_requests_limit_is_bounded(gateway, limit):
    gw = await gateway({})
    status, _, body = await get(gw, f"/v1/gateway/requests?limit={limit}")
    assert status == 400 and body["error"]["param"] == "limit"
    status, _, body = await get(gw, "/v1/gateway/requests?limit=1000")
    assert status == 200 and body["limit"] == 1000


async def test_ledger_off(gateway):
    gw = await gateway({"LEDGER_PATH": "off"})
    status, _, body = await get(gw, "/v1/gateway/usage")
    assert status == 503 and body["error"]["code"] == "ledger_disabled"
    status, _, _ = await post(gw, "/api/query", {"query": "still works"})
    assert status == 200


# ---------------------------------------------------------------- budgets
class GatedOpenAI(FakeOpenAI):
    """Holds every chat request until ``gate`` opens; counts the ones waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.changed = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.waiting += 1
        self.changed.set()
        await self.gate.wait()
        return await super().chat(request)


@pytest.fixture
async def gated_openai():
    f = GatedOpenAI()
    await f.start()
    yield f
    f.gate.set()
    await f.stop()


async def test_budget_under_concurrent_requests_never_overspends(gateway, gated_openai):
    env = {"OPENAI_API_KEY": gated_openai.api_key, "OPENAI_BASE_URL": gated_openai.url + "/v1",
           "CACHE_ENABLED": "false"}
    payload = {"query": Q, "model": "gpt-4o-mini", "max_tokens": 1000}
    probe = await gateway(env)
    targets = probe.app[RESOLVER].targets("gpt-4o-mini", None, None)
    each = worst_case({"messages": [{"role": "user", "content": Q}], "max_tokens": 1000}, targets).usd
    assert each is not None
    budget = each * D("3.5")  # room for three worst cases, not four
    gw = await gateway(env, config=f'[tenants.default]\nbudget_usd_per_day = "{budget}"\n')

    tasks = [asyncio.create_task(post(gw, "/v1/gateway/query", payload)) for _ in range(5)]
    async with asyncio.timeout(10):
        while gated_openai.waiting < 3:  # three admitted requests reach the vendor and wait there
            gated_openai.changed.clear()
            await gated_openai.changed.wait()
        while sum(t.done() for t in tasks) < 2:  # the two others are refused without waiting
            await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)
    assert gated_openai.waiting == 3
    refused = [t.result() for t in tasks if t.done()]
    assert [(s, b["error"]["code"]) for s, _, b in refused] == [(402, "budget_exceeded")] * 2
    spend = gw.app[BUDGETS].spend["default"]
    assert spend.reserved_day == 3 * each and spend.spent_day == 0

    gated_openai.gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(s for s, _, _ in results) == [200, 200, 200, 402, 402]
    assert len(gated_openai.requests) == 3
    assert spend.reserved_day == 0 and spend.spent_day == 3 * FAKE_COST  # reconciled with the actual cost
    # the room is back: the next request fits again
    status, _, _ = await post(gw, "/v1/gateway/query", payload)
    assert status == 200


async def test_budget_applies_to_chat_completions_before_any_upstream_call(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, **KEYS},
                       config='[tenants.acme]\nbudget_usd_per_day = "0.000001"\n')
    status, _, body = await post(gw, "/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, headers=ACME)
    assert status == 402 and body["error"]["code"] == "budget_exceeded" and "acme" in body["error"]["message"]
    assert fake_openai.requests == []
    assert gw.events("response")[-1]["error_type"] == "budget_exceeded"  # not max_cost_usd's cost_limit_exceeded
    # another tenant has no budget
    status, _, _ = await post(gw, "/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, headers=GLOBEX)
    assert status == 200
    _, _, rows = await get(gw, "/v1/gateway/requests", headers=ACME)
    assert rows["data"][0]["status"] == 402 and rows["data"][0]["cost_usd"] == 0


async def test_budget_spend_is_seeded_from_the_ledger(gateway, vendor_env, tmp_path):
    path = str(tmp_path / "shared-ledger.sqlite3")
    config = '[tenants.default]\nbudget_usd_per_day = "1"\nbudget_usd_per_month = "10"\n'
    first = await gateway({**vendor_env, "LEDGER_PATH": path}, config=config)
    for i in range(2):
        status, _, _ = await post(first, "/api/query", {"query": f"what is {i} plus two?", "model": "openai"})
        assert status == 200
    await first.server.close()  # a clean stop flushes the ledger
    second = await gateway({**vendor_env, "LEDGER_PATH": path}, config=config)
    spend = second.app[BUDGETS].spend["default"]
    assert spend.spent_day == spend.spent_month == 2 * FAKE_COST


# ---------------------------------------------------------------- the answers match /openapi.json
def conforms(name: str, instance: Any) -> None:
    rs = pytest.importorskip("jsonschema_rs")
    from llm_gateway.handlers.openapi import DOCUMENT

    schema = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    rs.Draft202012Validator(schema).validate(instance)


async def test_answers_match_the_openapi_document(gateway, vendor_env):
    gw = await gateway(vendor_env, config=EXTRA)
    conforms("QueryResponse", (await post(gw, "/api/query", {"query": Q}))[2])
    conforms("GatewayQueryResponse", (await post(gw, "/v1/gateway/query", {"query": Q, "model": "openai"}))[2])
    conforms("GatewayQueryResponse", (await post(gw, "/v1/gateway/query", {
        "query": Q, "model": "gpt-4o", "model_version": "2099-01-01"}))[2])  # unpriced: nulls
    conforms("GatewayQueryResponse", (await post(gw, "/v1/gateway/query", {
        "query": Q, "model": "openai", "dry_run": True}))[2])
    conforms("CostEstimate", (await post(gw, "/v1/gateway/cost-estimate", {"query": Q, "model": "gpt-4o"}))[2])
    conforms("CostEstimate", (await post(gw, "/v1/gateway/cost-estimate", {"query": Q, "model": "local/llama3.2"}))[2])
    conforms("Usage", (await get(gw, "/v1/gateway/usage?group_by=tenant,provider,model,day,month"))[2])
    conforms("RecentRequests", (await get(gw, "/v1/gateway/requests"))[2])
    conforms("Status", (await get(gw, "/api/status"))[2])
