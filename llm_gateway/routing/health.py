"""Per-target health: failure counts, cool-down and recovery (a small circuit breaker).

closed ──(FAILURE_THRESHOLD failures in a row, or a rate limit)──▶ open
open ──(cool-down elapsed)──▶ half_open: one probe request is let through
half_open ──success──▶ closed;  ──failure──▶ open again, with a doubled cool-down

``auto`` and fallbacks skip open targets; /api/status reports per provider.
The clock is injected so tests move time instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClientError, GatewayError, RateLimited

FAILURE_THRESHOLD = 3
BASE_COOLDOWN = 30.0
MAX_COOLDOWN = 300.0


@dataclass(slots=True)
class TargetHealth:
    state: str = "closed"
    consecutive_failures: int = 0
    open_until: float = 0.0
    cooldown: float = BASE_COOLDOWN
    probing: bool = False
    last_error: str | None = None
    last_error_at: float | None = None
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))


#: targets tracked at most (the catalog has well under a hundred)
MAX_TARGETS = 2048


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.targets: dict[str, TargetHealth] = {}
        #: called with the target key each time a circuit opens (metrics: cool-downs)
        self.on_cooldown: Callable[[str], None] | None = None

    def _get(self, key: str) -> TargetHealth:
        h = self.targets.get(key)
        if h is None:
            if len(self.targets) >= MAX_TARGETS:
                self._evict()
            h = self.targets[key] = TargetHealth()
        return h

    def _evict(self) -> None:
        """Model names come from clients (ids outside the catalog are forwarded): the table
        is bounded. The oldest healthy entry goes first; one that is cooling down is only
        given up when every entry is."""
        victim = next((k for k, h in self.targets.items() if h.state == "closed"), None)
        del self.targets[victim if victim is not None else next(iter(self.targets))]

    def available(self, key: str) -> bool:
        h = self.targets.get(key)
        if h is None or h.state == "closed":
            return True
        if h.state == "open" and self.clock() >= h.open_until:
            h.state = "half_open"
            h.probing = False
        if h.state == "half_open" and not h.probing:
            return True
        return False

    def begin(self, key: str) -> None:
        h = self._get(key)
        h.requests += 1
        if h.state == "half_open":
            h.probing = True

    def success(self, key: str, latency_ms: float) -> None:
        h = self._get(key)
        h.latencies_ms.append(latency_ms)
        h.consecutive_failures = 0
        h.state = "closed"
        h.probing = False
        h.cooldown = BASE_COOLDOWN

    def exhausted(self, key: str, seconds: float) -> None:
        """The vendor said (on a success) that this target's quota is used up: cool it
        down until the reset, so ``auto`` and fallbacks go elsewhere meanwhile."""
        h = self._get(key)
        h.rate_limited += 1
        was_open = h.state == "open"
        self._open(h, self.clock(), min(max(seconds, 0.0), MAX_COOLDOWN))
        if not was_open and self.on_cooldown is not None:
            self.on_cooldown(key)

    def failure(self, key: str, err: GatewayError) -> None:
        if isinstance(err, ClientError):
            return  # the caller's fault says nothing about the target's health
        h = self._get(key)
        h.errors += 1
        h.consecutive_failures += 1
        h.last_error = f"{err.error_type}: {err.message}"[:300]
        h.last_error_at = time.time()
        now = self.clock()
        was_open = h.state == "open"
        if isinstance(err, RateLimited):
            h.rate_limited += 1
        if h.state == "half_open":
            h.cooldown = min(h.cooldown * 2, MAX_COOLDOWN)
            self._open(h, now, h.cooldown)
        elif isinstance(err, RateLimited) and err.retry_after:
            self._open(h, now, min(err.retry_after, MAX_COOLDOWN))
        elif h.consecutive_failures >= FAILURE_THRESHOLD:
            self._open(h, now, h.cooldown)
        if not was_open and h.state == "open" and self.on_cooldown is not None:
            self.on_cooldown(key)

    @staticmethod
    def _open(h: TargetHealth, now: float, seconds: float) -> None:
        h.state = "open"
        h.probing = False
        h.open_until = max(h.open_until, now + seconds)

    def snapshot(self, prefix: str) -> dict[str, Any]:
        """Totals over every target of one provider (keys ``provider/model``)."""
        states = []
        out: dict[str, Any] = {"requests": 0, "errors": 0, "rate_limited": 0, "last_error": None}
        lat: list[float] = []
        last_at = -1.0
        for key, h in self.targets.items():
            if not key.startswith(prefix + "/"):
                continue
            self.available(key)  # let an elapsed cool-down show as half_open
            states.append(h.state)
            out["requests"] += h.requests
            out["errors"] += h.errors
            out["rate_limited"] += h.rate_limited
            lat.extend(h.latencies_ms)
            if h.last_error_at and h.last_error_at > last_at:
                last_at, out["last_error"] = h.last_error_at, h.last_error
        out["circuit"] = "open" if states and all(s == "open" for s in states) else (
            "half_open" if "half_open" in states or "open" in states else "closed")
        lat.sort()
        out["latency_ms_p50"] = round(lat[len(lat) // 2], 2) if lat else None
        return out
