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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import errors
from ..context import RequestContext
from ..logging import event
from ..settings import Settings
from .health import Health
from .resolve import Target
from .retry import RetryPolicy
from .stream import LiveStream, Segment

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
        #: metrics hook (set by create_app): ``.retry(provider)``, ``.fallback(provider)``
        self.observer: Any = None

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
                    result = await once(t)
                    ctx.error_type = None  # earlier attempts' failures are in ctx.failures
                    return result, t
                except errors.UnsupportedParameter as e:  # raised before any upstream call
                    e.provider, e.model = t.provider, t.model
                    client_errors.append(e)
                    break
                except errors.GatewayError as e:
                    e.provider = e.provider or t.provider
                    e.model = e.model or t.model
                    self.record_failure(ctx, t, e)
                    if isinstance(e, errors.ContextTooLong):
                        client_errors.append(e)
                        skip_until_context = t.context_window or 0
                        break
                    if isinstance(e, errors.ClientError):
                        raise
                    upstream_errors.append(e)
                    if not e.retryable or (isinstance(e, errors.UpstreamTimeout) and e.upstream_status is None
                                           and self.settings.timeout_moves_on):
                        break  # our own timeout moves on; a vendor's HTTP 504 answer is retried (SPEC 7)
                    computed = next(delays, None)
                    if computed is None:
                        break
                    delay = self.policy.delay_for(computed, e.retry_after)
                    if delay is None or self.clock() + delay > deadline:
                        break
                    event(logging.INFO, "retrying", event="attempt", provider=t.provider, model=t.model,
                          attempt=ctx.attempts, error_type=e.error_type, status=e.upstream_status or e.status,
                          delay_ms=round(delay * 1000.0, 1))
                    if self.observer is not None:
                        self.observer.retry(t.provider)
                    slept = time.perf_counter()
                    await self.sleep(delay)
                    ctx.waited_s += time.perf_counter() - slept
            if self.clock() >= deadline:
                break
            if index + 1 < len(targets):
                event(logging.INFO, "falling back", event="attempt", provider=t.provider, model=t.model,
                      attempt=ctx.attempts, error_type=ctx.error_type,
                      status=ctx.failures[-1]["status"] if ctx.failures else None, delay_ms=0)
                if self.observer is not None:
                    self.observer.fallback(t.provider)
        raise self._final(ctx, client_errors, upstream_errors)

    def record_failure(self, ctx: RequestContext, t: Target, e: errors.GatewayError) -> None:
        ctx.error_type = e.error_type
        ctx.failures.append({"provider": t.provider, "model": t.model, "error_type": e.error_type,
                             "status": e.upstream_status or e.status, "message": e.message[:300]})
        self.health.failure(t.key, e)
        event(logging.WARNING, e.message[:500], event="error", error_type=e.error_type,
              status=e.upstream_status or e.status, provider=t.provider, model=t.model,
              attempt=ctx.attempts, detail=(e.detail or e.message)[:500])

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
        self._check_quota(t, resp.headers)
        return out

    def _check_quota(self, t: Target, headers: Any) -> None:
        wait = t.adapter.quota_exhausted(headers)
        if wait is not None:
            self.health.exhausted(t.key, wait)
            event(logging.INFO, f"{t.key} reports its rate limit used up; cooling down for {wait:.1f} s",
                  event="rate_limited", provider=t.provider, model=t.model, wait_s=round(wait, 3))

    # ------------------------------------------------------------------ streaming
    async def open_stream(self, ctx: RequestContext, req: dict[str, Any],
                          targets: list[Target]) -> LiveStream:
        live, _ = await self.run(ctx, targets, lambda t: self._open_once(ctx, req, t, targets))
        return live

    async def _open_once(self, ctx: RequestContext, req: dict[str, Any], t: Target,
                         targets: list[Target]) -> LiveStream:
        deadline = self.clock() + self.settings.stream_first_token_timeout
        seg = await self.open_segment(ctx, req, t)
        live = LiveStream(self, ctx, seg, targets[targets.index(t) + 1:])
        try:
            await live.fill_first(deadline)
        except BaseException:
            live.close()
            raise
        return live

    async def open_segment(self, ctx: RequestContext, req: dict[str, Any], t: Target) -> Segment:
        """Send a streaming request and wait for a successful response head."""
        up_req = t.adapter.build_request(req, t.model, stream=True)
        transport = t.adapter.transport or self.transport
        timeout = self.settings.stream_first_token_timeout
        ctx.attempts += 1
        self.health.begin(t.key)
        t0 = time.perf_counter()
        try:
            up = await transport.open_stream(up_req, timeout)
        except BaseException:
            ctx.upstream_s += time.perf_counter() - t0
            raise
        seg = Segment(t, req, up, t.adapter.new_stream_translator(req, t.model), t0)
        if up.status < 400:
            self._check_quota(t, up.headers)
            return seg
        try:
            async with asyncio.timeout(timeout):
                body = await up.read()
        except (TimeoutError, errors.GatewayError):
            body = b""
        finally:
            seg.close()
            ctx.upstream_s += time.perf_counter() - t0
        if up.status in (400, 422) and "stream_options" not in req and t.adapter.refuses_stream_usage(body):
            # the field the gateway added (not one the client sent) was refused
            return await self.open_segment(ctx, req, t)  # asked again without stream_options
        raise t.adapter.parse_error(up.status, up.headers, body)


def _with_attempts(e: errors.GatewayError, attempts: list[dict[str, Any]]) -> errors.GatewayError:
    if isinstance(e, errors.AllTargetsFailed):
        return e
    wrapped = errors.AllTargetsFailed(e.message, attempts=attempts, status=e.status, retry_after=e.retry_after,
                                      provider=e.provider, model=e.model, upstream_status=e.upstream_status)
    wrapped.type, wrapped.code = e.type, e.code
    return wrapped
