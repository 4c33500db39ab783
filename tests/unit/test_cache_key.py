"""The cache key: what splits it, what does not, and which answers may be stored."""

from __future__ import annotations

import pytest

from llm_gateway.cache import cacheable
from llm_gateway.cache.key import PREFIX, cache_key, canonical

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
BASE = {"model": "gpt-4o-mini", "messages": MSGS, "temperature": 0.2, "max_tokens": 50}


def key(body=None, tenant="team-a", provider="openai", model="gpt-4o-mini"):
    return cache_key(tenant, provider, model, BASE if body is None else body)


def test_shape_and_determinism():
    k = key()
    assert k.startswith(PREFIX) and len(k) == len(PREFIX) + 64
    assert k == key(dict(reversed(list(BASE.items()))))  # key order in the client's JSON does not matter


@pytest.mark.parametrize("extra", [
    {"stream": True},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"user": "someone@example.com"},
    {"metadata": {"trace": "abc"}},
    {"store": True},
    {"service_tier": "default"},
    {"prompt_cache_key": "p1"},
    {"safety_identifier": "s1"},
    {"model": "openai/gpt-4o-mini"},  # the key names the resolved target, not the string typed
    {"seed": None},  # None counts as absent
    {"temperature": 0.2},
])
def test_fields_that_cannot_change_the_answer_share_the_key(extra):
    assert key({**BASE, **extra}) == key()


def test_whole_number_floats_are_normalised():
    assert key({**BASE, "temperature": 1}) == key({**BASE, "temperature": 1.0})
    assert key({**BASE, "top_p": 1}) == key({**BASE, "top_p": 1.0})


@pytest.mark.parametrize("change", [
    {"temperature": 0.3},
    {"top_p": 0.9},
    {"max_tokens": 51},
    {"max_completion_tokens": 50},
    {"seed": 7},
    {"stop": ["\n"]},
    {"n": 2},
    {"presence_penalty": 0.5},
    {"frequency_penalty": 0.5},
    {"logit_bias": {"50256": -100}},
    {"logprobs": True},
    {"top_logprobs": 2},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    {"tool_choice": "none"},
    {"parallel_tool_calls": False},
    {"reasoning_effort": "low"},
    {"some_future_field": 1},  # unknown fields split the key: never wrong beats more hits
    {"messages": [*MSGS, {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "Say hello"}]},
])
def test_fields_that_can_change_the_answer_split_the_key(change):
    assert key({**BASE, **change}) != key()


def test_tenant_provider_and_model_split_the_key():
    assert key(tenant="team-b") != key()
    assert key(tenant=None) == key(tenant="default")
    assert key(provider="mistral") != key()
    assert key(model="gpt-4o") != key()


def test_canonical_bytes_hold_no_ignored_field():
    raw = canonical("t", "openai", "gpt-4o-mini", {**BASE, "user": "u-1", "stream": True})
    assert b"u-1" not in raw and b"stream" not in raw and b'"tenant":"t"' in raw


def _resp(*finish):
    return {"object": "chat.completion",
            "choices": [{"index": i, "message": {"role": "assistant", "content": "x"}, "finish_reason": f}
                        for i, f in enumerate(finish)]}


@pytest.mark.parametrize("finish,ok", [
    (("stop",), True), (("length",), False), (("tool_calls",), True), (("stop", "stop"), True),
    ((None,), False), (("content_filter",), False), (("stop", None), False), ((), False),
])
def test_only_complete_answers_are_cacheable(finish, ok):
    assert cacheable(_resp(*finish)) is ok


def test_errors_are_not_cacheable():
    assert not cacheable({"error": {"message": "boom"}})
    assert not cacheable(None)
    assert not cacheable({"object": "chat.completion.chunk", "choices": [{"finish_reason": "stop"}]})
