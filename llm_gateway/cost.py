"""Tokens → cost in USD, as ``Decimal`` (no float drift), from the catalog's prices.

Buckets are disjoint: cached input tokens are billed at the cached-input price and
the rest of the prompt at the input price; output includes reasoning tokens (vendors
bill them as output).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .catalog import Price

MILLION = Decimal(1_000_000)
_Q = Decimal("0.0000000001")


def usage_buckets(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(uncached input, cached input, output) from an OpenAI-shaped usage dict."""
    if not usage:
        return 0, 0, 0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return prompt - cached, cached, completion


def cost_usd(price: Price | None, usage: dict[str, Any] | None) -> Decimal | None:
    """The cost of ``usage`` at ``price``; None when the model is unpriced."""
    if price is None:
        return None
    fresh, cached, out = usage_buckets(usage)
    total = (fresh * price.input + cached * price.cached_input + out * price.output) / MILLION
    return total.quantize(_Q)


def estimate_usd(price: Price | None, input_tokens: int, output_tokens: int) -> Decimal | None:
    if price is None:
        return None
    return ((input_tokens * price.input + output_tokens * price.output) / MILLION).quantize(_Q)


def fmt_usd(value: Decimal | None) -> str:
    """A plain decimal string (``0.0000123``), never scientific notation."""
    if value is None:
        return "0"
    s = format(value.normalize(), "f")
    return s if s != "-0" else "0"


#: output tokens assumed for a worst-case estimate when neither the request (max_tokens)
#: nor the catalog (max_output_tokens) gives a cap
DEFAULT_OUTPUT_CAP = 4096


def token_buckets(usage: dict[str, Any] | None) -> dict[str, int]:
    """Disjoint token buckets from a canonical usage dict; they sum to ``total``.

    ``input`` excludes cached input, ``output`` excludes reasoning (both vendors' subsets
    in the OpenAI shape: prompt_tokens_details.cached_tokens, completion_tokens_details.
    reasoning_tokens)."""
    fresh, cached, out = usage_buckets(usage)
    details = (usage or {}).get("completion_tokens_details") or {}
    reasoning = int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0
    reasoning = min(reasoning, out)
    return {"input": fresh, "cached_input": cached, "output": out - reasoning, "reasoning": reasoning,
            "total": fresh + cached + out}


def output_cap(body: dict[str, Any], max_output_tokens: int | None) -> tuple[int, str]:
    """The most output tokens one answer may bill, and where the figure comes from."""
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v, name
    if max_output_tokens:
        return int(max_output_tokens), "model_max_output_tokens"
    return DEFAULT_OUTPUT_CAP, "default"


def usd_number(value: Decimal | None) -> float | None:
    """A cost as a JSON number for API answers (SPEC 8 gives costs in bodies as numbers;
    the exact decimal string is in X-Gateway-Cost-USD and the ledger keeps Decimal)."""
    return None if value is None else float(value)
