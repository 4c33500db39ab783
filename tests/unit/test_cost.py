"""Cost maths against hand-computed figures: Decimal all the way, no float drift."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm_gateway.budget import worst_case
from llm_gateway.catalog import Price, load_catalog
from llm_gateway.cost import (
    DEFAULT_OUTPUT_CAP,
    cost_usd,
    estimate_usd,
    fmt_usd,
    output_cap,
    token_buckets,
    usage_buckets,
)
from llm_gateway.routing.resolve import Target
from llm_gateway.tokens import estimate_prompt_tokens

D = Decimal
MINI = Price(D("0.15"), D("0.60"), D("0.075"))  # gpt-4o-mini per 1M: input, output, cached input


def test_cached_input_is_priced_separately():
    # 1000 prompt tokens of which 400 cached, 500 output:
    # 600 x 0.15 + 400 x 0.075 + 500 x 0.60 = 90 + 30 + 300 = 420 per 1M tokens -> $0.00042
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 400}}
    assert cost_usd(MINI, usage) == D("0.00042")
    assert usage_buckets(usage) == (600, 400, 500)


def test_reasoning_is_billed_as_output():
    # Gemini 2.5 Flash: 0.30 in, 2.50 out. 200 in, 1000 out of which 800 reasoning:
    # 200 x 0.30 + 1000 x 2.50 = 60 + 2500 = 2560 per 1M -> $0.00256
    flash = Price(D("0.30"), D("2.50"), D("0.075"))
    usage = {"prompt_tokens": 200, "completion_tokens": 1000, "completion_tokens_details": {"reasoning_tokens": 800}}
    assert cost_usd(flash, usage) == D("0.00256")
    assert token_buckets(usage) == {"input": 200, "cached_input": 0, "output": 200, "reasoning": 800, "total": 1200}


def test_buckets_are_disjoint_and_sum_to_total():
    usage = {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
             "prompt_tokens_details": {"cached_tokens": 250}, "completion_tokens_details": {"reasoning_tokens": 100}}
    b = token_buckets(usage)
    assert b == {"input": 750, "cached_input": 250, "output": 200, "reasoning": 100, "total": 1300}
    assert b["input"] + b["cached_input"] + b["output"] + b["reasoning"] == b["total"]


def test_bogus_details_are_clamped_not_negative():
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50},
             "completion_tokens_details": {"reasoning_tokens": 9}}
    assert token_buckets(usage) == {"input": 0, "cached_input": 10, "output": 0, "reasoning": 5, "total": 15}
    assert token_buckets(None) == {"input": 0, "cached_input": 0, "output": 0, "reasoning": 0, "total": 0}


def test_big_numbers_exact():
    # Claude Opus 4: 15 in, 75 out. 1,000,000 in + 1,000,000 out = $90 exactly.
    opus = Price(D("15.00"), D("75.00"), D("1.50"))
    assert cost_usd(opus, {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}) == D("90")
    # 1 token of gpt-4.1-nano cached input: 0.025 / 1M = 2.5e-8
    nano = Price(D("0.10"), D("0.40"), D("0.025"))
    one = cost_usd(nano, {"prompt_tokens": 1, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 1}})
    assert one == D("0.000000025")
    assert fmt_usd(one) == "0.000000025"


def test_no_float_drift_over_many_requests():
    price = Price(D("0.1"), D("0.2"), D("0.1"))
    each = cost_usd(price, {"prompt_tokens": 1, "completion_tokens": 1})
    assert each == D("0.0000003")
    total = sum((each for _ in range(100_000)), D(0))
    assert total == D("0.03")  # a float sum of 3e-7 a hundred thousand times is not 0.03
    drift = 0.0
    for _ in range(100_000):  # a plain running sum (Python 3.12's sum() compensates; += does not)
        drift += 3e-7
    assert drift != 0.03


def test_unpriced_is_none():
    assert cost_usd(None, {"prompt_tokens": 10, "completion_tokens": 10}) is None
    assert estimate_usd(None, 10, 10) is None


def test_empty_usage_costs_zero():
    assert cost_usd(MINI, None) == D(0)
    assert cost_usd(MINI, {}) == D(0)


@pytest.mark.parametrize("value, text", [
    (D("0.0000000001"), "0.0000000001"),
    (D("1E-10"), "0.0000000001"),
    (D("0E-10"), "0"),
    (D("-0"), "0"),
    (D("5.000"), "5"),
    (D("1E+3"), "1000"),
    (D("12345678.9012345678"), "12345678.9012345678"),
    (D("0.00042"), "0.00042"),
    (None, "0"),
])
def test_fmt_usd_never_scientific(value, text):
    assert fmt_usd(value) == text
    assert "E" not in fmt_usd(value) and "e" not in fmt_usd(value)


def test_output_cap_sources():
    assert output_cap({"max_tokens": 50}, 16384) == (50, "max_tokens")
    assert output_cap({"max_completion_tokens": 70, "max_tokens": 50}, 16384) == (70, "max_completion_tokens")
    assert output_cap({}, 16384) == (16384, "model_max_output_tokens")
    assert output_cap({}, None) == (DEFAULT_OUTPUT_CAP, "default")
    assert output_cap({"max_tokens": True}, None) == (DEFAULT_OUTPUT_CAP, "default")


def _target(model_id: str) -> Target:
    cat = load_catalog()
    e = cat.get(model_id)
    assert e is not None
    return Target(e.provider, e.id, None, e)  # type: ignore[arg-type]


def test_worst_case_by_hand():
    body = {"messages": [{"role": "user", "content": "How much is this?"}], "max_tokens": 1000}
    pt = estimate_prompt_tokens(body["messages"])
    est = worst_case(body, [_target("gpt-4o-mini")])
    # pt x 0.15 + 1000 x 0.60 per 1M
    assert est.usd == (pt * D("0.15") + 1000 * D("0.60")) / 1_000_000
    assert (est.input_tokens, est.output_cap, est.output_cap_basis) == (pt, 1000, "max_tokens")
    # no max_tokens: the model's max_output_tokens (16384 for gpt-4o-mini); n multiplies the output
    est = worst_case({"messages": body["messages"], "n": 2}, [_target("gpt-4o-mini")])
    assert est.output_cap == 2 * 16384
    assert est.usd == (pt * D("0.15") + 2 * 16384 * D("0.60")) / 1_000_000


def test_worst_case_takes_the_dearest_target_of_a_chain():
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100}
    est = worst_case(body, [_target("gpt-4o-mini"), _target("claude-opus-4-0"), _target("gemini-2.0-flash")])
    assert est.target.model == "claude-opus-4-0"
    pt = est.input_tokens
    assert est.usd == (pt * D("15.00") + 100 * D("75.00")) / 1_000_000
    assert est.unpriced == []


def test_a_recovered_stream_sums_usage_details_and_keeps_a_vendor_prompt_count() -> None:
    from types import SimpleNamespace

    from llm_gateway.context import RequestContext
    from llm_gateway.usage import settle_stream

    def seg(usage, text, prompt=None):
        tr = SimpleNamespace(usage=usage, text=[text], prompt_tokens=prompt)
        return SimpleNamespace(translator=tr, request={"messages": [{"role": "user", "content": "hi"}]},
                               target=SimpleNamespace(entry=None, provider="p", model="m"))

    a = seg({"prompt_tokens": 100, "completion_tokens": 60, "total_tokens": 160,
             "prompt_tokens_details": {"cached_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 50}},
            "partial")
    b = seg(None, "the rest of it", prompt=120)  # cut before its usage; the vendor said 120 at the start
    live = SimpleNamespace(segments=[a, b], seg=b)
    u = settle_stream(RequestContext("r"), {}, live)
    assert u["prompt_tokens"] == 220 and u["prompt_tokens_details"] == {"cached_tokens": 40}
    assert u["completion_tokens_details"] == {"reasoning_tokens": 50} and u["completion_tokens"] > 60
