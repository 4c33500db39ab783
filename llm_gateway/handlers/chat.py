"""POST /v1/chat/completions — the OpenAI-compatible surface, stream and non-stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from .. import errors
from ..context import RequestContext
from ..cost import fmt_usd
from ..cache import Flight
from ..cache.stream import StreamRecorder, replay_chunks
from ..keys import CACHE, CTX, LIFECYCLE, RESOLVER, ROUTER, SETTINGS
from ..budget import admit, body_tenant, tenant_of
from ..limits import admit_tenant, reserve_chat
from ..logging import event, event_later, log
from ..middleware.errors import scrub_bytes
from ..routing.resolve import Resolver, Target
from ..sse import DONE, SSE_HEADERS, SSEResponse, frame, frame_error
from ..usage import settle_stream, settle_usage
from ..validation import ChatRequest, parse_chat

#: answers are logged at debug level only, cut to this many characters (like the query)
ANSWER_LOG_CHARS = 2000


def log_request(request: web.Request, ctx: RequestContext, query: str | Callable[[], str] | None = None) -> None:
    """``query``: the text, or a function that finds it (only called when it is logged).

    The line is formatted when the pending lines are written (``event_later``): the
    handler's first wait is for the vendor, so that work overlaps the wait instead of
    delaying the vendor call (and, for a stream, the first token)."""
    ctx.request_logged = True
    if not log.isEnabledFor(logging.INFO):
        return
    settings = request.app[SETTINGS]
    fields: dict[str, Any] = {
        "event": "request", "method": request.method, "path": request.path, "model": ctx.model_asked,
        "task_type": ctx.task_type, "tenant": ctx.tenant, "stream": ctx.stream,
    }
    if query is not None and (settings.log_queries or settings.log_level == "debug"):
        fields["query"] = (query if isinstance(query, str) else query())[:2000]
    event_later(logging.INFO, "request", **fields)


def log_route(resolver: Resolver, ctx: RequestContext, model: str, task_type: str | None,
              targets: list[Target]) -> None:
    """The chosen model and why: at info when the gateway chose (``auto``), else debug."""
    level = logging.INFO if model.strip().lower() == "auto" else logging.DEBUG
    if log.isEnabledFor(level):
        why = resolver.explain(model, task_type, targets)
        event_later(level, f"routing to {targets[0].key}", event="route", model=model, task_type=task_type,
                    chosen=targets[0].key, targets=[t.key for t in targets], **why)


async def take_tenant(request: web.Request, ctx: RequestContext, tenant: str | None) -> None:
    """The tenant a body names (``budget.body_tenant``); without keys the rate-limit
    middleware left the admission to the handler, which knows the tenant only now."""
    body_tenant(request, ctx, tenant)
    if not request.app[SETTINGS].auth_enabled:
        await admit_tenant(request, tenant_of(ctx))


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def gateway_headers(ctx: RequestContext, t: Target | None, with_cost: bool) -> dict[str, str]:
    """The SPEC 8 headers; ``t`` None: a cache hit (who answered is in ``ctx``)."""
    h = {
        "X-Request-ID": ctx.request_id,  # a stream is prepared here, before the middleware sees it
        "X-Gateway-Provider": t.provider if t is not None else (ctx.provider or ""),
        "X-Gateway-Model": t.model if t is not None else (ctx.model or ""),
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
    ctx.endpoint = "/v1/chat/completions"  # recorded in the spend ledger when it ends
    await take_tenant(request, ctx, cr.tenant)
    log_request(request, ctx, lambda: last_user_text(cr.body))
    targets = app[RESOLVER].targets(cr.model, cr.task_type, cr.fallbacks)
    log_route(app[RESOLVER], ctx, cr.model, cr.task_type, targets)
    cache = app[CACHE]
    flight: Flight | None = None
    key = cache.key_for(ctx, cr.cache, targets[0].provider, targets[0].model, cr.body)
    if key is not None:
        got = await cache.acquire(ctx, key)  # a stored answer, a concurrent twin's, or ours to make
        if not isinstance(got, Flight):
            return await serve_cached(request, ctx, got["response"], cr.stream, cr.include_usage)
        flight = got
    try:  # tokens per minute (limits/): reserved from the estimate, reconciled when the request ends
        await reserve_chat(request, cr.body)
        admit(request, ctx, cr.body, targets)  # the tenant's USD budget (budget.py): worst case reserved
    except errors.GatewayError:
        if flight is not None:
            cache.release(flight)  # identical waiters try on their own, under their own limits
        raise
    try:
        if not cr.stream:
            return await _complete(request, ctx, cr, targets, flight)
        return await _stream(request, ctx, cr, targets, flight)
    except errors.GatewayError as e:
        if flight is not None:
            cache.fail(flight, e)  # identical requests waiting on this one get the same error
        raise
    finally:
        if flight is not None:
            cache.release(flight)  # no-op once finished; else the waiters try on their own


async def _complete(request: web.Request, ctx: RequestContext, cr: ChatRequest, targets: list[Target],
                    flight: Flight | None) -> web.Response:
    resp, t = await request.app[ROUTER].complete(ctx, cr.body, targets)
    text = answer_text(resp)
    resp["usage"] = settle_usage(ctx, t, cr.body, resp.get("usage"), text)
    if flight is not None:
        cache = request.app[CACHE]
        await cache.finish(flight, cache.entry(resp, t.provider, t.model, ctx.estimated))
    log_answer(ctx, text)
    return web.Response(body=orjson.dumps(resp), content_type="application/json",
                        headers=gateway_headers(ctx, t, with_cost=True))


async def _stream(request: web.Request, ctx: RequestContext, cr: ChatRequest, targets: list[Target],
                  flight: Flight | None) -> web.StreamResponse:
    live = await request.app[ROUTER].open_stream(ctx, cr.body, targets)
    ctx.first_token_s = time.perf_counter() - ctx.started  # the first content chunk is in hand
    t = live.target
    ctx.provider, ctx.model = t.provider, t.model
    recorder = StreamRecorder() if flight is not None else None
    resp = SSEResponse(headers={**SSE_HEADERS, **gateway_headers(ctx, t, with_cost=False)})
    try:
        await resp.prepare(request)
    except BaseException:  # the client left before the first byte: let go of the upstream now
        live.close()
        raise
    try:
        await live.pump(_Client(resp, recorder))
        usage = settle_stream(ctx, cr.body, live)
    except errors.GatewayError as e:
        # After the first byte nothing is retried: end with an error event, no [DONE].
        return await _end_with_error(request, ctx, cr, live, flight, resp, e)
    except asyncio.CancelledError:
        if not request.app[LIFECYCLE]["stopping"]:
            _client_left(ctx, cr, live, t)
            raise
        # The gateway is stopping and its drain time is over: the client is told, with
        # the SSE error event an unfinished answer ends with (SPEC 7), not a cut body.
        e = errors.UpstreamUnavailable("The gateway is shutting down; this answer was cut before it was complete. "
                                       "Send the request again.")
        ctx.error_type, ctx.outcome_status = "shutdown", 503
        settle_stream(ctx, cr.body, live)
        event(logging.WARNING, "stream cut by the gateway's shutdown", event="error", error_type="shutdown",
              status=503, provider=t.provider, model=t.model, attempt=ctx.attempts,
              detail=f"after {(ctx.usage or {}).get('completion_tokens', 0)} output tokens")
        with contextlib.suppress(Exception):
            resp.end_nowait(frame_error(e.envelope(ctx.request_id)))
        raise
    except ConnectionError:  # the client's connection broke, or it stopped reading (sse.CLIENT_SEND_TIMEOUT)
        _client_left(ctx, cr, live, t)
        return resp  # nothing more can be sent; aiohttp's own finish gives up quietly
    except Exception:
        # A fault of ours after the first byte: the status line is gone, so the client is
        # told the way SPEC 7 ends an unfinished answer (the SSE error event), never with a
        # second HTTP response written into the body.
        log.exception("unhandled error in a stream", extra={"event": "error", "error_type": "internal_error",
                                                          "status": 500})
        e = errors.InternalError("The gateway hit an internal error after the answer had started; it has been "
                                 "logged with this request id. Send the request again.")
        return await _end_with_error(request, ctx, cr, live, flight, resp, e)
    if flight is not None and recorder is not None:
        # Stored before the last bytes go out: a client leaving now cannot lose a complete answer.
        answer = recorder.response(usage, t.model)
        cache = request.app[CACHE]
        await cache.finish(flight, cache.entry(answer, ctx.provider or t.provider, ctx.model or t.model,
                                               ctx.estimated) if answer is not None else None)
    tail = DONE
    if cr.include_usage:
        tail = frame(usage_chunk(live, usage, ctx)) + DONE
    # The usage chunk, [DONE] and the end of the chunked body in one write: a client that
    # stops reading at [DONE] (aiohttp) finds the body complete and keeps the connection,
    # and one that drains to the end (the openai SDK) does not wait for a second packet.
    try:
        await resp.write_eof(tail)
    except ConnectionError:  # the answer is complete (and billed, and cached); the client left
        ctx.error_type, ctx.outcome_status = "client_disconnected", 499
        return resp
    log_answer(ctx, live.delivered_text())
    return resp


async def _end_with_error(request: web.Request, ctx: RequestContext, cr: ChatRequest, live: Any,
                          flight: Flight | None, resp: SSEResponse, e: errors.GatewayError) -> SSEResponse:
    """A stream that cannot be finished: billed for what it used, never cached, ended
    with the SSE error event and no ``[DONE]``."""
    ctx.error_type = e.error_type
    ctx.outcome_status = e.status
    try:
        settle_stream(ctx, cr.body, live)
    except Exception:  # the error event still goes out; the fault is in the log
        log.exception("settling a failed stream failed", extra={"event": "error", "error_type": "internal_error"})
    if flight is not None:
        request.app[CACHE].fail(flight, e)  # never stored; waiters get the error too
    try:
        await resp.write_eof(scrub_bytes(frame_error(e.envelope(ctx.request_id)), request))
    except ConnectionError:  # the client left too: nobody is left to tell
        pass
    return resp


def _client_left(ctx: RequestContext, cr: ChatRequest, live: Any, t: Target) -> None:
    """The client went away: the upstream stream is closed (aclosing above) and the
    tokens spent so far are logged and billed."""
    settle_stream(ctx, cr.body, live)
    u = ctx.usage or {}
    event(logging.INFO, "client disconnected; upstream request cancelled", event="error",
          error_type="client_disconnected", status=499, provider=t.provider, model=t.model,
          attempt=ctx.attempts, detail=f"closed mid-stream after {u.get('completion_tokens', 0)} output tokens")
    ctx.error_type, ctx.outcome_status = "client_disconnected", 499


def usage_chunk(live: Any, usage: dict[str, Any] | None, ctx: RequestContext) -> dict[str, Any]:
    """The stream's last chunk (``stream_options.include_usage``): the same ``id``,
    ``created`` and ``model`` as the chunks before it, as OpenAI sends, the usage of the
    whole answer (every segment of a recovered stream, whose chunks all carry the first
    segment's identity)."""
    cid, created, model, fingerprint = live.segments[0].translator.identity()
    chunk: dict[str, Any] = {"id": cid or "chatcmpl-" + ctx.request_id.replace("-", "")[:24],
                             "object": "chat.completion.chunk", "created": created or int(time.time()),
                             "model": model or live.segments[0].target.model}
    if fingerprint is not None:
        chunk["system_fingerprint"] = fingerprint
    chunk["choices"] = []
    chunk["usage"] = usage
    return chunk


class _Client:
    """The SSE response as ``LiveStream.pump`` writes to it: batches framed, recorded
    for the cache when there is one, and written in one piece each."""

    __slots__ = ("resp", "recorder")

    def __init__(self, resp: SSEResponse, recorder: StreamRecorder | None) -> None:
        self.resp = resp
        self.recorder = recorder

    @property
    def nowait(self) -> bool:
        return self.resp.nowait

    def _bytes(self, batch: list[Any]) -> bytes:
        if self.recorder is not None:
            for chunk in batch:
                self.recorder.feed(chunk)
        return frame(batch[0]) if len(batch) == 1 else b"".join(map(frame, batch))

    async def write(self, batch: list[Any]) -> None:
        await self.resp.write(self._bytes(batch))

    def write_nowait(self, batch: list[Any]) -> bool:
        return self.resp.write_nowait(self._bytes(batch))

    @property
    def write_event_nowait(self) -> Callable[[bytes], bool] | None:
        """A chunk as received goes straight to the response, unless it is being recorded."""
        return self.resp.write_event_nowait if self.recorder is None else None

    async def drain(self) -> None:
        await self.resp.drain()


async def serve_cached(request: web.Request, ctx: RequestContext, answer: dict[str, Any], stream: bool,
                       include_usage: bool) -> web.StreamResponse:
    """A stored answer (``ctx`` already says HIT, $0): JSON, or replayed as a well-formed stream."""
    log_answer(ctx, answer_text(answer))
    headers = gateway_headers(ctx, None, with_cost=True)
    if not stream:
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)
    resp = SSEResponse(headers={**SSE_HEADERS, **headers})
    await resp.prepare(request)
    await resp.write_eof(b"".join(frame(c) for c in replay_chunks(answer, include_usage)) + DONE)
    return resp


def answer_text(resp: dict[str, Any]) -> str:
    choices = resp.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return text if isinstance(text, str) else ""


def log_answer(ctx: RequestContext, text: str) -> None:
    """The answer text, at debug level only (SPEC 9: answers never at info)."""
    if log.isEnabledFor(logging.DEBUG):
        event(logging.DEBUG, "answer", event="answer", provider=ctx.provider, model=ctx.model,
              cache=ctx.cache, answer=text[:ANSWER_LOG_CHARS], answer_chars=len(text))
