"""Settling a finished answer: vendor usage (else an offline estimate, flagged) and its cost.

Used by every endpoint that proxies a completion, so usage and cost are computed the
same way everywhere and exactly once per request.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .context import RequestContext
from .cost import cost_usd
from .routing.resolve import Target
from .routing.stream import LiveStream
from .tokens import estimate_tokens, request_estimate


def settle_usage(ctx: RequestContext, t: Target, body: dict[str, Any], usage: dict[str, Any] | None,
                 answer_text: str) -> dict[str, Any]:
    """Vendor usage when given, else an offline estimate (flagged); cost computed once."""
    if not usage or "prompt_tokens" not in usage:
        pt = request_estimate(ctx, body)
        ct = estimate_tokens(answer_text)
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        ctx.estimated = True
    elif usage.get("total_tokens") is None:
        usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    ctx.usage = usage
    ctx.provider, ctx.model = t.provider, t.model
    price = t.entry.price if t.entry is not None else None
    ctx.priced = price is not None
    ctx.cost = cost_usd(price, usage)
    usage["cost"] = float(ctx.cost) if ctx.cost is not None else 0.0
    return usage


def settle_stream(ctx: RequestContext, body: dict[str, Any], live: LiveStream) -> dict[str, Any]:
    """Usage and cost of a streamed answer: one segment, or the sum of a spliced one.

    A recovered stream was billed by every upstream it touched, so the totals are the
    sum of each segment's usage (vendor numbers, else estimates), each at its own price."""
    segs = live.segments
    first = segs[0]
    if len(segs) == 1:
        tr = first.translator
        if (not tr.usage or "prompt_tokens" not in tr.usage) and tr.prompt_tokens is not None:
            usage = settle_usage(ctx, first.target, body, _partial(tr, body, ctx), "")
            ctx.estimated = True  # the output is estimated; the prompt is the vendor's count
            return usage
        return settle_usage(ctx, first.target, body, tr.usage, "".join(tr.text))
    total: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    cached = reasoning = 0
    cost: Decimal | None = Decimal(0)
    estimated = False
    for seg in segs:
        tr = seg.translator
        u = tr.usage if tr.usage and "prompt_tokens" in tr.usage else None
        if u is None:
            estimated = True
            u = _partial(tr, seg.request, ctx)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[k] += int(u.get(k) or 0)
        cached += int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        reasoning += int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        price = seg.target.entry.price if seg.target.entry is not None else None
        c = cost_usd(price, u)
        cost = None if c is None or cost is None else cost + c
    if cached:
        total["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        total["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    ctx.usage, ctx.estimated, ctx.cost, ctx.priced = total, estimated, cost, cost is not None
    ctx.provider, ctx.model = live.seg.target.provider, live.seg.target.model
    total["cost"] = float(cost) if cost is not None else 0.0
    return total


def _partial(tr: Any, request: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    """A segment without vendor usage: the prompt as the vendor counted it when it said
    (Anthropic's message_start), else estimated; the output estimated from its text."""
    pt = tr.prompt_tokens if tr.prompt_tokens is not None else request_estimate(ctx, request)
    ct = estimate_tokens("".join(tr.text))
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
