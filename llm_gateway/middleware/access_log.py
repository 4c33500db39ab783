"""The request and response log lines of SPEC 9 (inside request-id, outside errors)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..context import RequestContext
from ..cost import fmt_usd
from ..keys import CTX, METRICS, REQUEST_END
from ..logging import event, log
from ..metrics import Metrics

#: paths logged at debug level only (probes and scrapes would drown the real traffic)
_QUIET = frozenset({"/healthz", "/metrics", "/favicon.ico"})


@web.middleware
async def access_log_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    ctx = request[CTX]
    quiet = request.path in _QUIET or not (request.path.startswith("/v1/") or request.path.startswith("/api/"))
    status = 500
    metrics = request.app.get(METRICS)
    if metrics is not None and not quiet:
        metrics.in_flight.inc()
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client closed the connection before the answer was complete
        ctx.error_type = ctx.error_type or "client_disconnected"
        raise
    finally:
        # Off the answer's critical path: aiohttp writes the response when this middleware
        # returns, in the same step of the task; the lines, metrics and request-end hooks
        # (ledger, budget settlement) follow as the loop's next callback, in a copy of this
        # context (the request id). An in-process client sees the answer only after them:
        # the loop runs callbacks in the order they were queued.
        asyncio.get_running_loop().call_soon(_finished, request, ctx, status, quiet, metrics)


def _finished(request: web.Request, ctx: RequestContext, status: int, quiet: bool, metrics: Metrics | None) -> None:
    # A stream that ended with an SSE error event (or was cut by a shutdown) went out as a
    # 200; the log line, the metrics and the ledger all count it by the error it carried.
    status = ctx.outcome_status or status
    level = logging.DEBUG if quiet else logging.INFO
    try:
        if not ctx.request_logged:
            event(level, "request", event="request", method=request.method, path=request.path,
                  model=ctx.model_asked, task_type=ctx.task_type, tenant=ctx.tenant, stream=ctx.stream)
        u = ctx.usage or {}
        event(level, "response", event="response", status=status, provider=ctx.provider, model=ctx.model,
              latency_ms=round(ctx.elapsed_ms(), 3), attempts=ctx.attempts, cache=ctx.cache,
              input_tokens=u.get("prompt_tokens"), output_tokens=u.get("completion_tokens"),
              total_tokens=u.get("total_tokens"), estimated=ctx.estimated,
              cost_usd=fmt_usd(ctx.cost) if ctx.cost is not None else None,
              error_type=ctx.error_type)
        if metrics is not None:
            if not quiet:
                metrics.in_flight.dec()
            metrics.record(request, ctx, status)
    except Exception:  # the request is answered: a failure here is logged, never raised into the loop
        log.exception("request-end logging failed", extra={"event": "error", "error_type": "internal_error"})
    for hook in request.app.get(REQUEST_END, ()):  # spend ledger, budget settlement
        try:
            hook(request, ctx, status)
        except Exception:  # a hook must never fail the request it reports on
            log.exception("request-end hook failed", extra={"event": "error", "error_type": "internal_error"})
