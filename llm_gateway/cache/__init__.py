"""The response cache (SPEC 3, 8): canonical per-tenant keys, aiocache memory or Redis,
single-flight for identical requests in flight, and the HIT / MISS / BYPASS status.

How a handler uses it (chat completions and the native query endpoints alike)::

    cache = request.app[CACHE]
    key = cache.key_for(ctx, wanted, target.provider, target.model, body)  # None: BYPASS
    if key is None:
        ...                                        # no cache: call the router as usual
    else:
        entry, hit = await cache.get_or_run(ctx, key, produce)
        # produce() -> cache.entry(response, provider, model, estimated); called only by the
        # one request that leads; a hit (or a follower of the leader) gets the stored
        # entry, ctx already says HIT, $0, attempts 0, the original usage.

Streams use the lower-level ``acquire`` / ``finish`` / ``fail`` / ``release`` (see
``handlers/chat.py``): a streaming leader sends its stream live and stores the
assembled answer when it completed; a concurrent identical request waits for it and
is served from that answer (replayed as SSE when it asked for a stream).

Rules:
* Stored: a ``chat.completion`` whose every choice finished with ``stop``, ``tool_calls``
  or ``function_call``. Never stored: errors, a stream that ended in an error event or
  without a finish reason, ``content_filter`` answers, and answers cut at the token limit
  (``length``): a truncated answer is never served again as if it were whole. An answer served by
  a fallback target is a valid answer to the request and is stored under the request's
  key (the key names the *requested* first target; the entry names who answered).
* ``temperature > 0`` without ``seed`` is still cached: leaving ``cache`` on is the
  caller's opt-in; send ``cache: false`` (or set CACHE_ENABLED=false) for fresh samples.
* ``CACHE_TTL=0`` turns the cache off (nothing could be served from it).
* A hit costs nothing: ``ctx.cost`` is 0 and ``usage.cost`` is 0, while the token counts
  stay the original answer's.
* Single-flight is per process (memory): with several workers or replicas sharing Redis,
  each process may send one request for the same key. A follower of a streaming leader
  waits for the whole answer and is then served it as a replayed stream; a follower gets
  the leader's error too, and tries on its own only when the leader ended with neither
  (its client went away) or was refused admission (rate limit / budget).
* Redis down: requests are served without the cache (``MISS``: nothing came from it), one
  warning line when it goes, one info line when it is back (see ``backends.py``), and
  ``llm_gateway_cache_backend_up`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson

from ..context import RequestContext
from ..errors import GatewayError
from ..settings import Settings
from .backends import Backend, MemoryBackend, RedisBackend
from .key import cache_key
from .singleflight import Flight, SingleFlight, copy_error

__all__ = ["ResponseCache", "Flight", "cacheable", "cache_key"]

#: finish reasons of a complete answer (``length``, ``content_filter`` and a missing reason are not)
STORABLE_FINISH = frozenset({"stop", "tool_calls", "function_call"})
_ZERO = Decimal(0)


def cacheable(response: Any) -> bool:
    if not isinstance(response, dict) or response.get("object", "chat.completion") != "chat.completion":
        return False
    choices = response.get("choices")
    if not choices or not isinstance(choices, list):
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") in STORABLE_FINISH for c in choices)


class ResponseCache:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time, metrics: Any = None) -> None:
        self.enabled = settings.cache_enabled and settings.cache_ttl > 0
        self.ttl = float(settings.cache_ttl)
        self.clock = clock
        self.metrics = metrics
        self.flights = SingleFlight()
        self.backend: Backend
        if settings.cache_backend == "redis":
            on_state = (lambda up: metrics.cache_backend_state("redis", up)) if metrics else None
            self.backend = RedisBackend(settings.redis_url, clock, on_state)
        else:
            self.backend = MemoryBackend(settings.cache_max_entries)
        if metrics is not None:
            metrics.cache_backend_state(self.backend.name, True)

    async def close(self) -> None:
        await self.backend.close()

    # ------------------------------------------------------------------ keys and status
    def key_for(self, ctx: RequestContext, wanted: bool | None, provider: str, model: str,
                body: dict[str, Any]) -> str | None:
        """The key (``ctx.cache`` = MISS until a hit), or None (BYPASS) when the cache is off
        or the request said ``cache: false``."""
        if not self.enabled or wanted is False:
            ctx.cache = "BYPASS"
            self._count("bypass")
            return None
        ctx.cache = "MISS"
        return cache_key(ctx.tenant, provider, model, body)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache_result(result)

    @staticmethod
    def entry(response: dict[str, Any], provider: str, model: str, estimated: bool = False) -> dict[str, Any]:
        """What is stored: the canonical response (with its original usage) and who answered."""
        return {"response": response, "provider": provider, "model": model, "estimated": estimated}

    @staticmethod
    def apply_hit(ctx: RequestContext, entry: dict[str, Any]) -> None:
        """ctx for an answer served without an upstream call: HIT, $0, original usage."""
        resp = entry["response"]
        usage = dict(resp.get("usage") or {})
        usage["cost"] = 0.0
        resp["usage"] = usage
        ctx.cache = "HIT"
        ctx.provider, ctx.model = entry.get("provider"), entry.get("model")
        ctx.usage = usage
        ctx.estimated = bool(entry.get("estimated"))
        ctx.cost = _ZERO
        ctx.priced = True

    # ------------------------------------------------------------------ storage
    async def lookup(self, key: str) -> dict[str, Any] | None:
        """A live entry, or None (absent, expired on the injected clock, unreadable, or
        the backend is down)."""
        raw = await self.backend.get(key)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
            fresh = entry["expires_at"] > self.clock()
        except (orjson.JSONDecodeError, KeyError, TypeError):
            fresh = False
        if not fresh:
            await self.backend.delete(key)
            return None
        return entry

    async def store(self, key: str, entry: dict[str, Any]) -> bytes | None:
        """Store a complete answer and return the bytes written; None (nothing written)
        for anything else."""
        if not self.enabled or not cacheable(entry.get("response")):
            return None
        now = self.clock()
        entry["stored_at"], entry["expires_at"] = now, now + self.ttl
        raw = orjson.dumps(entry)
        await self.backend.set(key, raw, self.ttl)
        return raw

    # ------------------------------------------------------------------ single-flight
    async def acquire(self, ctx: RequestContext, key: str) -> dict[str, Any] | Flight:
        """A stored entry or a concurrent leader's answer (ctx set for a hit), or the
        ``Flight`` the caller now leads and must end with ``finish``/``fail``/``release``.
        Raises (a copy of) the leader's error when the leader failed."""
        while True:
            entry = await self.lookup(key)
            if entry is not None:
                self.apply_hit(ctx, entry)
                self._count("hit")
                return entry
            flight, leader = self.flights.join(key)
            if leader:
                # Double-check: a leader may have stored and left while we looked.
                entry = await self.lookup(key)
                if entry is not None:
                    self.flights.finish(flight, value=orjson.dumps(entry))
                    self.apply_hit(ctx, entry)
                    self._count("hit")
                    return entry
                self._count("miss")
                return flight
            await self.flights.wait(flight)
            if flight.error is not None:
                raise copy_error(flight.error)
            if flight.value is not None:
                entry = orjson.loads(flight.value)
                self.apply_hit(ctx, entry)
                self._count("coalesced")
                return entry
            # the leader ended without an answer (its client went away): try again

    async def finish(self, flight: Flight, entry: dict[str, Any] | None) -> None:
        """The leader's answer: stored when complete, then handed to the followers."""
        raw = None
        try:
            if entry is not None:
                raw = await self.store(flight.key, entry)
        finally:
            if entry is not None and raw is None and flight.waiters:
                raw = orjson.dumps(entry)  # not storable, but the followers still share it
            self.flights.finish(flight, value=raw)

    def fail(self, flight: Flight, error: BaseException) -> None:
        self.flights.finish(flight, error=error)

    def release(self, flight: Flight) -> None:
        """End a flight with no outcome (idempotent; a no-op after finish/fail)."""
        self.flights.finish(flight)

    async def get_or_run(self, ctx: RequestContext, key: str,
                         produce: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
        """(entry, hit). ``produce`` returns ``ResponseCache.entry(...)``; it runs only
        in the request that leads; its GatewayError is shared with the followers."""
        got = await self.acquire(ctx, key)
        if not isinstance(got, Flight):
            return got, True
        try:
            entry = await produce()
        except GatewayError as e:
            self.fail(got, e)
            raise
        except BaseException:
            self.release(got)
            raise
        await self.finish(got, entry)
        return entry, False
