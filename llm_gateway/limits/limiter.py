"""Per-tenant and per-key limits: admission, token reservation, reconciliation, headers.

Where the token count comes from (the one design choice worth stating):
the rate-limit middleware admits the request (requests per minute, plus "the token
buckets are not in debt") before the body is read; the *handler*, which parses the
body anyway, then reserves tokens with ``await reserve_chat(request, body)`` (prompt
estimate + ``max_tokens`` or RATE_LIMIT_DEFAULT_OUTPUT_TOKENS, times ``n``). Parsing the
body a second time in the middleware would cost CPU on every request; caching a parsed
body on the request would couple the middleware to every handler's input shape. When
the request ends, the middleware reconciles the reservation with the actual usage
(``ctx.usage``; a cache hit or a failed request costs nothing). A handler that never
reserves is still covered: its real usage is charged at the end and the next request
waits for the debt.

Each step is one atomic ``apply`` on the store (memory, or one Lua script in Redis).
A reservation never exceeds a bucket's capacity, so a request without ``max_tokens``
is admitted into an empty minute; a prompt whose estimate alone exceeds a tokens-per-
minute limit is refused with 429 and no Retry-After (waiting would not help).

Redis outage (RATE_LIMIT_BACKEND=redis): fail open (RATE_LIMIT_FAIL_OPEN=true, the
default) means this process falls back to its own in-memory buckets, so limits still
hold per process; fail closed answers 503 ``rate_limiter_unavailable``. Either way the
store is not asked again for ``REDIS_RETRY_S`` seconds, and one log line marks each
change of state (down, restored).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..logging import event
from ..settings import Settings
from .redis_store import RedisStore, StoreUnavailable
from .store import ALWAYS, Bucket, MemoryStore, Outcome, Step

#: seconds the redis store is left alone after a failure
REDIS_RETRY_S = 1.0
_LABEL = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __bool__(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)


@dataclass(slots=True)
class Ticket:
    """One request's admission. ``taken`` = tokens charged per token bucket so far."""

    buckets: list[Bucket]
    taken: dict[str, float] = field(default_factory=dict)
    levels: dict[str, float] = field(default_factory=dict)
    settled: bool = False

    @property
    def token_buckets(self) -> list[Bucket]:
        return [b for b in self.buckets if b.kind == "tokens"]

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the tightest bucket of each kind."""
        out: dict[str, str] = {}
        for kind in ("requests", "tokens"):
            best: tuple[float, Bucket] | None = None
            for b in self.buckets:
                if b.kind == kind:
                    lv = self.levels.get(b.key, float(b.capacity))
                    if best is None or lv < best[0]:
                        best = (lv, b)
            if best is None:
                continue
            lv, b = best
            out[f"x-ratelimit-limit-{kind}"] = str(b.capacity)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(lv + 1e-9)))
            out[f"x-ratelimit-reset-{kind}"] = fmt_duration((b.capacity - lv) / b.rate)
        return out


def fmt_duration(seconds: float) -> str:
    """Like OpenAI's reset headers (Go durations): ``250ms``, ``12s``, ``6m0s``, ``1.5s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60.0)
    s = f"{secs:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{s}s" if minutes >= 1 else f"{s}s"


def _limits(tbl: Mapping[str, Any]) -> Limits:
    return Limits(tbl.get("requests_per_minute"), tbl.get("tokens_per_minute"))


def tenant_limits(settings: Settings) -> dict[str, Limits]:
    out = {}
    for name, tbl in (settings.config.get("tenants") or {}).items():
        lim = _limits(tbl)
        if lim:
            out[name] = lim
    return out


def key_limits(settings: Settings) -> dict[str, Limits]:
    out = {}
    for entry in settings.hashed_keys.values():
        lim = Limits(entry.requests_per_minute, entry.tokens_per_minute)
        if lim:
            out[entry.id] = lim
    return out


def limits_configured(settings: Settings) -> bool:
    return bool(tenant_limits(settings) or key_limits(settings))


class Limiter:
    def __init__(self, settings: Settings, clock: Callable[[], float] | None = None,
                 shared: Any = None) -> None:
        self.tenants = tenant_limits(settings)
        self.keys = key_limits(settings)
        self.default_output = settings.rate_limit_default_output_tokens
        self.memory = MemoryStore(clock or time.monotonic)
        self.shared = shared
        if shared is None and settings.rate_limit_backend == "redis":
            self.shared = RedisStore(settings.redis_url)
        self.fail_open = settings.rate_limit_fail_open
        self.healthy: bool | None = None  # of the shared store; None until first asked
        self._skip_until = 0.0

    # ------------------------------------------------------------------ plan
    def buckets(self, tenant: str | None, key_id: str | None) -> list[Bucket]:
        out: list[Bucket] = []
        for scope, ident, lim in (("t", tenant, self.tenants.get(tenant or "")),
                                  ("k", key_id, self.keys.get(key_id or ""))):
            if not lim:
                continue
            label = f"tenant '{ident}'" if scope == "t" else f"key '{ident}'"
            if lim.requests_per_minute:
                out.append(Bucket(f"llmgw:rl:{scope}:{ident}:rpm", "requests", lim.requests_per_minute, label))
            if lim.tokens_per_minute:
                out.append(Bucket(f"llmgw:rl:{scope}:{ident}:tpm", "tokens", lim.tokens_per_minute, label))
        return out

    # ------------------------------------------------------------------ steps
    async def admit(self, ticket: Ticket) -> None:
        """One request unit from every requests bucket; token buckets must not be in debt."""
        steps = [Step(b, 1, 1) if b.kind == "requests" else Step(b, 1, 0) for b in ticket.buckets]
        out = await self._apply(steps)
        self._record(ticket, steps, out)

    async def reserve(self, ticket: Ticket, prompt_tokens: int, output_tokens: int | None) -> None:
        tbs = ticket.token_buckets
        if not tbs:
            return
        want = max(0, prompt_tokens) + (self.default_output if output_tokens is None else max(0, output_tokens))
        steps = []
        for b in tbs:
            if prompt_tokens > b.capacity:
                raise errors.RateLimitExceeded(
                    f"Request too large for {b.scope} on {_LABEL['tokens']}: limit {b.capacity}, "
                    f"requested about {prompt_tokens} prompt tokens. Shorten the input; waiting will not help.")
            take = float(min(want, b.capacity))
            steps.append(Step(b, take, take))
        out = await self._apply(steps)
        self._record(ticket, steps, out)
        for s in steps:
            ticket.taken[s.bucket.key] = ticket.taken.get(s.bucket.key, 0.0) + s.take

    async def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Charge the difference between the actual usage and what was reserved."""
        if ticket.settled:
            return
        ticket.settled = True
        steps = [Step(b, ALWAYS, actual_tokens - ticket.taken.get(b.key, 0.0)) for b in ticket.token_buckets]
        steps = [s for s in steps if s.take]
        if not steps:
            return
        try:
            await self._apply(steps, settling=True)
        except errors.GatewayError:  # pragma: no cover - settling never refuses
            pass

    # ------------------------------------------------------------------ store
    def _record(self, ticket: Ticket, steps: list[Step], out: Outcome) -> None:
        for s, lv in zip(steps, out.levels, strict=True):
            ticket.levels[s.bucket.key] = lv
        if out.refused is None:
            return
        s = steps[out.refused]
        b = s.bucket
        wait = out.wait_s
        raise errors.RateLimitExceeded(
            f"Rate limit reached for {b.scope} on {_LABEL[b.kind]}: limit {b.capacity}, "
            f"remaining {max(0, math.floor(out.levels[out.refused] + 1e-9))}, requested "
            f"{math.ceil(s.need)}. Please try again in {fmt_duration(wait)}.",
            retry_after=wait)

    async def _apply(self, steps: list[Step], settling: bool = False) -> Outcome:
        if self.shared is not None:
            now = time.monotonic()
            if now >= self._skip_until:
                try:
                    out = await self.shared.apply(steps)
                except StoreUnavailable as e:
                    self._skip_until = time.monotonic() + REDIS_RETRY_S
                    self._set_healthy(False, str(e))
                else:
                    self._set_healthy(True)
                    return out
            if not self.fail_open and not settling:
                raise errors.LimiterUnavailable(
                    "The shared rate-limit store is unreachable and the gateway is set to fail closed "
                    "(RATE_LIMIT_FAIL_OPEN=false); try again shortly.", retry_after=REDIS_RETRY_S)
        return self.memory.apply_now(steps)

    def _set_healthy(self, ok: bool, why: str = "") -> None:
        if ok == self.healthy or (ok and self.healthy is None):
            self.healthy = ok
            return
        self.healthy = ok
        if ok:
            event(logging.WARNING, "rate-limit store reachable again: shared limits restored",
                  event="rate_limit_store", state="up", backend="redis")
        else:
            mode = ("failing open: this process enforces its own in-memory limits" if self.fail_open
                    else "failing closed: limited requests get 503")
            event(logging.WARNING, f"rate-limit store unreachable ({why}); {mode}",
                  event="rate_limit_store", state="down", backend="redis", fail_open=self.fail_open)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
