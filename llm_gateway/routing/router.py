"""Run one request over its targets: retry with backoff, fall back, first-byte rule.

``complete`` returns a canonical response; ``open_stream`` returns a ``LiveStream``
whose first content chunks are already in hand (retries and fallbacks happen freely
until then). After the first byte reaches the client nothing is retried: a failure is
raised to the handler, which ends the client stream with an SSE error event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .. import errors
from ..adapters.base import Chunk, StreamTranslator, UpstreamStream
from ..context import RequestContext
from ..logging import event
from ..settings import Settings
from ..sse import SSEParser
from .health import Health
from .resolve import Target
from .retry import RetryPolicy

T = TypeVar("T")


class Router:
    def __init__(
        self,
        settings: Settings,
        transport: Any,
        health: Health,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.health = health
        self.policy = policy or RetryPolicy(settings)
        self.sleep = sleep
        self.clock = clock

    # ------------------------------------------------------------------ the chain
    async def run(self, ctx: RequestContext, targets: list[Target],
                  once: Callable[[Target], Awaitable[T]]) -> tuple[T, Target]:
        deadline = self.clock() + self.settings.request_deadline
        client_errors: list[errors.GatewayError] = []
        upstream_errors: list[errors.GatewayError] = []
        skip_until_context: int | None = None
        for index, t in enumerate(targets):
            if skip_until_context is not None and (t.context_window or 0) <= skip_until_context:
                continue
            if index > 0:
                ctx.fallback_used = True
            delays = self.policy.delays()
            while True:
                try:
                    return await once(t), t
                except errors.UnsupportedParameter as e:  # raised before any upstream call
                    e.provider, e.model = t.provider, t.model
                    client_errors.append(e)
                    break
                except errors.GatewayError as e:
                    e.provider = e.provider or t.provider
                    e.model = e.model or t.model
                    self._record(ctx, t, e)
                    if isinstance(e, errors.ContextTooLong):
                        client_errors.append(e)
                        skip_until_context = t.context_window or 0
                        break
                    if isinstance(e, errors.ClientError):
                        raise
                    upstream_errors.append(e)
                    if not e.retryable or (isinstance(e, errors.UpstreamTimeout) and self.settings.timeout_moves_on):
                        break
                    computed = next(delays, None)
                    if computed is None:
                        break
                    delay = self.policy.delay_for(computed, e.retry_after)
                    if delay is None or self.clock() + delay > deadline:
                        break
                    event(logging.INFO, "retrying", event="attempt", provider=t.provider, model=t.model,
                          attempt=ctx.attempts, error_type=e.error_type, status=e.upstream_status or e.status,
                          delay_ms=round(delay * 1000.0, 1))
                    await self.sleep(delay)
            if self.clock() >= deadline:
                break
            if index + 1 < len(targets):
                event(logging.INFO, "falling back", event="attempt", provider=t.provider, model=t.model,
                      attempt=ctx.attempts, error_type=ctx.error_type, status=None, delay_ms=0)
        raise self._final(ctx, client_errors, upstream_errors)

    def _record(self, ctx: RequestContext, t: Target, e: errors.GatewayError) -> None:
        ctx.error_type = e.error_type
        ctx.failures.append({"provider": t.provider, "model": t.model, "error_type": e.error_type,
                             "status": e.upstream_status or e.status, "message": e.message[:300]})
        self.health.failure(t.key, e)
        event(logging.WARNING, e.message[:500], event="error", error_type=e.error_type,
              status=e.upstream_status or e.status, provider=t.provider, model=t.model,
              attempt=ctx.attempts, detail=e.message[:500])

    def _final(self, ctx: RequestContext, client_errors: list[errors.GatewayError],
               upstream_errors: list[errors.GatewayError]) -> errors.GatewayError:
        if not upstream_errors:
            if client_errors:
                return client_errors[0]
            return errors.BadRequest("no target could take this request", code="no_target")
        if len(upstream_errors) == 1 and not client_errors:
            return _with_attempts(upstream_errors[0], ctx.failures)
        if all(isinstance(e, errors.RateLimited) for e in upstream_errors):
            waits = [e.retry_after for e in upstream_errors if e.retry_after is not None]
            cls, status, retry_after = errors.RateLimited, 429, (min(waits) if waits else None)
        elif all(isinstance(e, errors.UpstreamTimeout) for e in upstream_errors):
            cls, status, retry_after = errors.UpstreamTimeout, 504, None
        elif any(isinstance(e, errors.Overloaded | errors.RateLimited) for e in upstream_errors):
            cls, status, retry_after = errors.Overloaded, 503, None
        else:
            cls, status, retry_after = errors.UpstreamUnavailable, 502, None
        last = upstream_errors[-1]
        n = len(ctx.failures)
        msg = (f"All {n} upstream attempt{'s' if n != 1 else ''} failed "
               f"(last: {last.provider}/{last.model}: {last.message}). "
               "See error.attempts; try again later or add fallbacks.")
        final = errors.AllTargetsFailed(msg, attempts=ctx.failures, status=status, retry_after=retry_after,
                                        provider=last.provider, model=last.model)
        final.type, final.code = cls.type, cls.code
        return final

    # ------------------------------------------------------------------ non-streaming
    async def complete(self, ctx: RequestContext, req: dict[str, Any],
                       targets: list[Target]) -> tuple[dict[str, Any], Target]:
        return await self.run(ctx, targets, lambda t: self._complete_once(ctx, req, t))

    async def _complete_once(self, ctx: RequestContext, req: dict[str, Any], t: Target) -> dict[str, Any]:
        up = t.adapter.build_request(req, t.model, stream=False)
        transport = t.adapter.transport or self.transport
        ctx.attempts += 1
        self.health.begin(t.key)
        t0 = time.perf_counter()
        try:
            resp = await transport.send(up, self.settings.request_timeout)
        finally:
            ctx.upstream_s += time.perf_counter() - t0
        if resp.status >= 400:
            raise t.adapter.parse_error(resp.status, resp.headers, resp.body)
        out = t.adapter.parse_response(resp.body, t.model)
        self.health.success(t.key, (time.perf_counter() - t0) * 1000.0)
        return out

    # ------------------------------------------------------------------ streaming
    async def open_stream(self, ctx: RequestContext, req: dict[str, Any],
                          targets: list[Target]) -> LiveStream:
        live, _ = await self.run(ctx, targets, lambda t: self._open_once(ctx, req, t))
        return live

    async def _open_once(self, ctx: RequestContext, req: dict[str, Any], t: Target) -> LiveStream:
        up_req = t.adapter.build_request(req, t.model, stream=True)
        transport = t.adapter.transport or self.transport
        ctx.attempts += 1
        self.health.begin(t.key)
        t0 = time.perf_counter()
        first_deadline = self.clock() + self.settings.stream_first_token_timeout
        up = await transport.open_stream(up_req, self.settings.stream_first_token_timeout)
        live = LiveStream(self, ctx, t, up, t.adapter.new_stream_translator(req, t.model), t0)
        try:
            if up.status >= 400:
                body = await live.read_body(first_deadline)
                raise t.adapter.parse_error(up.status, up.headers, body)
            await live.fill_first(first_deadline)
        except BaseException:
            live.close()
            ctx.upstream_s += time.perf_counter() - t0
            raise
        return live


def _with_attempts(e: errors.GatewayError, attempts: list[dict[str, Any]]) -> errors.GatewayError:
    if isinstance(e, errors.AllTargetsFailed):
        return e
    wrapped = errors.AllTargetsFailed(e.message, attempts=attempts, status=e.status, retry_after=e.retry_after,
                                      provider=e.provider, model=e.model, upstream_status=e.upstream_status)
    wrapped.type, wrapped.code = e.type, e.code
    return wrapped


class LiveStream:
    """An upstream stream being translated. ``pending`` holds chunks not yet sent."""

    def __init__(self, router: Router, ctx: RequestContext, target: Target, up: UpstreamStream,
                 translator: StreamTranslator, started: float) -> None:
        self.router = router
        self.ctx = ctx
        self.target = target
        self.up = up
        self.translator = translator
        self.parser = SSEParser()
        self.pending: list[Chunk] = []
        self.started = started
        self.malformed = 0
        self._it = up.iter_chunks()
        self._ended = False
        self._closed = False

    async def read_body(self, deadline: float) -> bytes:
        try:
            async with asyncio.timeout(max(0.001, deadline - self.router.clock())):
                return await self.up.read()
        except TimeoutError:
            raise errors.UpstreamTimeout("the error answer did not arrive in time") from None

    def _feed(self, data: bytes) -> None:
        for ev in self.parser.feed(data):
            self._event(ev)

    def _event(self, ev: Any) -> None:
        if self.translator.done:
            return
        try:
            self.pending.extend(self.translator.feed(ev))
        except ValueError as e:
            self.malformed += 1
            event(logging.WARNING, "skipped a malformed stream event", event="error", error_type="malformed_event",
                  status=None, provider=self.target.provider, model=self.target.model,
                  attempt=self.ctx.attempts, detail=str(e)[:200])
            if self.malformed > 1:
                raise errors.UpstreamBadResponse(
                    f"{self.target.provider} sent more than one malformed stream event") from None

    def _has_content(self) -> bool:
        tr = self.translator
        if tr.text or tr.finish_reason is not None or tr.done:
            return True
        for c in self.pending:
            if isinstance(c, dict):
                for ch in c.get("choices") or ():
                    d = ch.get("delta") or {}
                    if d.get("tool_calls") or d.get("content") or ch.get("finish_reason"):
                        return True
            elif b'"tool_calls"' in c:
                return True
        return False

    async def fill_first(self, deadline: float) -> None:
        """Read until the first content chunk (or the end) within the first-token deadline."""
        while not self._has_content():
            remaining = deadline - self.router.clock()
            if remaining <= 0:
                raise errors.UpstreamTimeout(
                    f"no first token within {self.router.settings.stream_first_token_timeout:g} s")
            if not await self._read(remaining, first=True):
                break
        if self._ended:
            self._check_complete()

    async def _read(self, timeout: float, first: bool = False) -> bool:
        """Read one network piece into ``pending``. False at the end of the body."""
        try:
            async with asyncio.timeout(timeout):
                data = await anext(self._it)
        except StopAsyncIteration:
            for ev in self.parser.close():
                self._event(ev)
            self.pending.extend(self.translator.finish())
            self._ended = True
            return False
        except TimeoutError:
            s = self.router.settings
            what = (f"no first token within {s.stream_first_token_timeout:g} s" if first
                    else f"the stream stalled for {s.stream_idle_timeout:g} s")
            raise errors.UpstreamTimeout(what) from None
        self._feed(data)
        return True

    def _check_complete(self) -> None:
        tr = self.translator
        if not tr.done and tr.finish_reason is None:
            raise errors.UpstreamUnavailable(
                f"{self.target.provider} closed the stream before the answer was complete",
                provider=self.target.provider, model=self.target.model)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Every chunk, the already-read ones first; raises on a broken stream."""
        idle = self.router.settings.stream_idle_timeout
        try:
            while True:
                if self.pending:
                    out, self.pending = self.pending, []
                    for c in out:
                        yield c
                if self._ended or self.translator.done:
                    if not self._ended and self.translator.done:
                        self._ended = True
                    self._check_complete()
                    break
                await self._read(idle)
            self.router.health.success(self.target.key, (time.perf_counter() - self.started) * 1000.0)
        except errors.GatewayError as e:
            e.provider = e.provider or self.target.provider
            e.model = e.model or self.target.model
            self.router._record(self.ctx, self.target, e)
            raise
        finally:
            self.ctx.upstream_s += time.perf_counter() - self.started
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.up.close()
