"""POST /v1/chat/completions — the OpenAI-compatible surface, stream and non-stream."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from .. import errors
from ..context import RequestContext
from ..cost import cost_usd, fmt_usd
from ..keys import CTX, RESOLVER, ROUTER, SETTINGS
from ..logging import event
from ..routing.resolve import Target
from ..routing.stream import LiveStream
from ..sse import DONE, SSE_HEADERS, frame, frame_error
from ..tokens import estimate_prompt_tokens, estimate_tokens
from ..validation import parse_chat


def log_request(request: web.Request, ctx: RequestContext, query: str | None = None) -> None:
    settings = request.app[SETTINGS]
    fields: dict[str, Any] = {
        "event": "request", "method": request.method, "path": request.path, "model": ctx.model_asked,
        "task_type": ctx.task_type, "tenant": ctx.tenant, "stream": ctx.stream,
    }
    if query is not None and (settings.log_queries or settings.log_level == "debug"):
        fields["query"] = query[:2000]
    ctx.request_logged = True
    event(logging.INFO, "request", **fields)


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def settle_usage(ctx: RequestContext, t: Target, body: dict[str, Any], usage: dict[str, Any] | None,
                 answer_text: str) -> dict[str, Any]:
    """Vendor usage when given, else an offline estimate (flagged); cost computed once."""
    if not usage or "prompt_tokens" not in usage:
        pt = estimate_prompt_tokens(body.get("messages") or [])
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
        return settle_usage(ctx, first.target, body, first.translator.usage, "".join(first.translator.text))
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    cost: Decimal | None = Decimal(0)
    estimated = False
    for seg in segs:
        tr = seg.translator
        u = tr.usage if tr.usage and "prompt_tokens" in tr.usage else None
        if u is None:
            estimated = True
            pt = estimate_prompt_tokens(seg.request.get("messages") or [])
            ct = estimate_tokens("".join(tr.text))
            u = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        for k in total:
            total[k] += int(u.get(k) or 0)
        price = seg.target.entry.price if seg.target.entry is not None else None
        c = cost_usd(price, u)
        cost = None if c is None or cost is None else cost + c
    ctx.usage, ctx.estimated, ctx.cost, ctx.priced = total, estimated, cost, cost is not None
    ctx.provider, ctx.model = live.seg.target.provider, live.seg.target.model
    total["cost"] = float(cost) if cost is not None else 0.0
    return total


def gateway_headers(ctx: RequestContext, t: Target, with_cost: bool) -> dict[str, str]:
    h = {
        "X-Gateway-Provider": t.provider,
        "X-Gateway-Model": t.model,
        "X-Gateway-Cache": ctx.cache,
        "X-Gateway-Attempts": str(ctx.attempts),
        "X-Gateway-Overhead-Ms": f"{ctx.overhead_ms():.3f}",
    }
    if with_cost:
        h["X-Gateway-Cost-USD"] = fmt_usd(ctx.cost)
    return h


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx = request[CTX]
    app = request.app
    cr = parse_chat(await request.read())
    ctx.model_asked, ctx.task_type, ctx.stream = cr.model, cr.task_type, cr.stream
    log_request(request, ctx, last_user_text(cr.body))
    targets = app[RESOLVER].targets(cr.model, cr.task_type, cr.fallbacks)
    router = app[ROUTER]
    if not cr.stream:
        resp, t = await router.complete(ctx, cr.body, targets)
        choices = resp.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        resp["usage"] = settle_usage(ctx, t, cr.body, resp.get("usage"), text if isinstance(text, str) else "")
        return web.Response(body=orjson.dumps(resp), content_type="application/json",
                            headers=gateway_headers(ctx, t, with_cost=True))

    live = await router.open_stream(ctx, cr.body, targets)
    t = live.target
    ctx.provider, ctx.model = t.provider, t.model
    resp = web.StreamResponse(headers={**SSE_HEADERS, **gateway_headers(ctx, t, with_cost=False)})
    await resp.prepare(request)
    try:
        async with aclosing(live.chunks()) as chunks:
            async for chunk in chunks:
                await resp.write(frame(chunk))
    except errors.GatewayError as e:
        # After the first byte nothing is retried: end with an error event, no [DONE].
        ctx.error_type = e.error_type
        settle_stream(ctx, cr.body, live)
        await resp.write(frame_error(e.envelope(ctx.request_id)))
        return resp
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        # The client went away: the upstream stream is closed (aclosing above) and the
        # tokens spent so far are logged and billed.
        settle_stream(ctx, cr.body, live)
        u = ctx.usage or {}
        event(logging.INFO, "client disconnected; upstream request cancelled", event="error",
              error_type="client_disconnected", status=499, provider=t.provider, model=t.model,
              attempt=ctx.attempts, detail=f"closed mid-stream after {u.get('completion_tokens', 0)} output tokens")
        ctx.error_type = "client_disconnected"
        raise
    usage = settle_stream(ctx, cr.body, live)
    if cr.include_usage:
        last = {"id": "chatcmpl-" + ctx.request_id.replace("-", "")[:24], "object": "chat.completion.chunk",
                "created": 0, "model": t.model, "choices": [], "usage": usage}
        await resp.write(frame(last))
    await resp.write(DONE)
    return resp
