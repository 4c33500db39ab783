"""GET /metrics: scraped, parsed with prometheus-client's parser, checked against the
values a known sequence of requests must produce."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_gateway.metrics import _Capped
from tests.fakes.base import Fault

OA_500 = {"error": {"message": "boom", "type": "server_error"}}
CHAT = "/v1/chat/completions"


async def scrape(gw) -> dict[str, list[Any]]:
    async with gw.http.get(gw.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(m: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels`` (0 when absent)."""
    hits = [s for s in m.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) <= 1, hits
    return hits[0].value if hits else 0.0


def total(m: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in m.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


async def chat(gw, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with gw.http.post(gw.url + CHAT, json=body) as r:
        return r.status, (await r.json() if not body.get("stream") else {"text": await r.text()})


async def test_metrics_after_a_known_sequence(gateway, vendor_env, fake_openai, fake_mistral):
    gw = await gateway({**vendor_env, "MAX_RETRIES": "2", "LOG_LEVEL": "info"})
    oa = {"model": "gpt-4o-mini"}
    # 1. a miss, 2. its hit
    s, b1 = await chat(gw, {**oa, "messages": [{"role": "user", "content": "Say hello"}]})
    assert s == 200 and b1["usage"]["prompt_tokens"] == 5 and b1["usage"]["completion_tokens"] == 4
    s, _ = await chat(gw, {**oa, "messages": [{"role": "user", "content": "Say hello"}]})
    # 3. a stream (a miss), with usage
    s, _ = await chat(gw, {**oa, "stream": True, "stream_options": {"include_usage": True},
                           "messages": [{"role": "user", "content": "Stream please"}]})
    assert s == 200
    # 4. one retry, then success
    fake_openai.inject(Fault(status=500, body=OA_500))
    s, _ = await chat(gw, {**oa, "messages": [{"role": "user", "content": "retry me"}]})
    assert s == 200
    # 5. three failures (two retries) open openai's circuit; mistral answers
    fake_openai.inject(*[Fault(status=500, body=OA_500)] * 3)
    s, b5 = await chat(gw, {**oa, "fallbacks": ["mistral-small-latest"],
                            "messages": [{"role": "user", "content": "fall back"}]})
    assert s == 200 and b5["model"].startswith("mistral-small-latest")
    # 6. an unknown route, 7. a probe
    async with gw.http.get(gw.url + "/v1/nope/123") as r:
        assert r.status == 404
    async with gw.http.get(gw.url + "/healthz") as r:
        assert r.status == 200

    m = await scrape(gw)
    req = "llm_gateway_requests_total"
    assert value(m, req, route=CHAT, provider="openai", model="gpt-4o-mini", status="200") == 4
    assert value(m, req, route=CHAT, provider="mistral", model="mistral-small-latest", status="200") == 1
    assert value(m, req, route="unmatched", provider="", model="", status="404") == 1
    assert value(m, req, route="/healthz", status="200") == 1
    assert total(m, req) == 7  # the scrape itself is counted when it ends

    # latency, overhead, upstream time, time to first token
    assert value(m, "llm_gateway_request_duration_seconds_count", route=CHAT) == 5
    assert value(m, "llm_gateway_overhead_seconds_count", route=CHAT) == 5
    assert value(m, "llm_gateway_upstream_duration_seconds_count", provider="openai", model="gpt-4o-mini") == 3
    assert value(m, "llm_gateway_upstream_duration_seconds_count", provider="mistral") == 1
    assert value(m, "llm_gateway_time_to_first_token_seconds_count", provider="openai") == 1
    assert total(m, "llm_gateway_time_to_first_token_seconds_count") == 1
    assert value(m, "llm_gateway_request_duration_seconds_bucket", route=CHAT, le="+Inf") == 5
    assert value(m, "llm_gateway_request_duration_seconds_sum", route=CHAT) > 0

    # tokens and cost: upstream answers only (the hit cost nothing and used no tokens)
    lab = {"provider": "openai", "model": "gpt-4o-mini", "tenant": "default"}
    assert value(m, "llm_gateway_input_tokens_total", **lab) == 15
    assert value(m, "llm_gateway_output_tokens_total", **lab) == 12
    assert value(m, "llm_gateway_cost_usd_total", **lab) == pytest.approx(3 * (5 * 0.15 + 4 * 0.60) / 1e6)
    mis = {"provider": "mistral", "model": "mistral-small-latest", "tenant": "default"}
    assert value(m, "llm_gateway_input_tokens_total", **mis) == b5["usage"]["prompt_tokens"] == 5
    assert value(m, "llm_gateway_output_tokens_total", **mis) == b5["usage"]["completion_tokens"] == 4
    assert value(m, "llm_gateway_cost_usd_total", **mis) == pytest.approx((5 * 0.10 + 4 * 0.30) / 1e6)

    # cache
    assert value(m, "llm_gateway_cache_requests_total", result="hit") == 1
    assert value(m, "llm_gateway_cache_requests_total", result="miss") == 4
    assert value(m, "llm_gateway_cache_requests_total", result="bypass") == 0
    assert value(m, "llm_gateway_cache_backend_up", backend="memory") == 1

    # retries, fallbacks, cool-downs
    assert value(m, "llm_gateway_retries_total", provider="openai") == 3
    assert value(m, "llm_gateway_fallbacks_total", provider="openai") == 1
    assert value(m, "llm_gateway_cooldowns_total", provider="openai") == 1
    assert total(m, "llm_gateway_cooldowns_total") == 1
    assert value(m, "llm_gateway_requests_in_flight") == 0

    # bounded labels: route patterns, never raw paths or request ids
    rids = {e["request_id"] for e in gw.logs() if e.get("request_id")}
    for samples in m.values():
        for s in samples:
            for k, v in s.labels.items():
                assert v not in rids
                assert "/nope" not in v and "123" not in v
    routes = {s.labels["route"] for s in m[req]}
    assert routes == {CHAT, "unmatched", "/healthz"}

    m2 = await scrape(gw)
    assert value(m2, req, route="/metrics", status="200") == 1


async def test_in_flight_gauge_and_per_app_registries(gateway, vendor_env, fake_openai):
    import asyncio

    gw1 = await gateway(vendor_env)
    gw2 = await gateway(vendor_env)  # a second app in the same process: its own registry
    fake_openai.inject(Fault(delay=0.3))
    task = asyncio.create_task(chat(gw1, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
    await fake_openai.arrived.wait()
    m = await scrape(gw1)
    assert value(m, "llm_gateway_requests_in_flight") == 1
    await task
    m = await scrape(gw1)
    assert value(m, "llm_gateway_requests_in_flight") == 0
    assert total(m, "llm_gateway_requests_total", route=CHAT) == 1
    m2 = await scrape(gw2)
    assert total(m2, "llm_gateway_requests_total", route=CHAT) == 0


async def test_tenant_label_and_bypass(gateway, vendor_env, fake_openai):
    gw = await gateway({**vendor_env, "GATEWAY_API_KEYS": "k1:team-a"})
    client = gw.sdk(api_key="k1")
    await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a b"}],
                                         extra_body={"cache": False})
    m = await scrape(gw)
    assert value(m, "llm_gateway_input_tokens_total", provider="openai", tenant="team-a") == 5
    assert value(m, "llm_gateway_cache_requests_total", result="bypass") == 1
    async with gw.http.post(gw.url + CHAT, json={}) as r:  # no key: 401, counted, no tokens
        assert r.status == 401
    m = await scrape(gw)
    assert value(m, "llm_gateway_requests_total", route=CHAT, status="401") == 1


def test_label_values_are_capped():
    cap = _Capped(3)
    assert [cap(v) for v in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", "other", "a", "other"]
