"""Token buckets and the in-memory store (one process).

A limit of ``N`` per minute is a bucket holding at most ``N`` units that refills
continuously at ``N / 60`` units per second (a token bucket, equivalent to GCRA).
A full bucket lets a burst of exactly ``N`` through; the ``N+1``-th waits until one
unit has refilled. OpenAI's ``x-ratelimit-reset-*`` headers mean "time until the
bucket is full again", which is ``(N - level) / rate`` here.

One admission is one ``apply`` over every bucket that concerns the request (tenant
and key, requests and tokens): either every bucket has what the step needs and all
of them are charged, or none is touched. Charges may be negative (a refund when the
actual usage was below the reservation) and may push a level below zero (usage
above the reservation is a debt the next requests wait for); a level never rises
above the bucket's capacity.

The Redis store (``redis_store.py``) runs the same algorithm as one Lua script.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str  # store key, e.g. ``llmgw:rl:t:acme:rpm``
    kind: str  # "requests" or "tokens"
    capacity: int  # the per-minute limit
    scope: str  # for messages: "tenant 'acme'" or "key 'ci'"

    @property
    def rate(self) -> float:
        """Units refilled per second."""
        return self.capacity / 60.0


@dataclass(frozen=True, slots=True)
class Step:
    bucket: Bucket
    need: float  # units that must be available (the check)
    take: float  # units charged when every check passes (may be negative)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one ``apply``: ``refused`` is the index of the first failing step or None."""

    refused: int | None
    wait_s: float  # when refused: seconds until that bucket can pass
    levels: tuple[float, ...]  # bucket levels after the step (before it, when refused)


#: ``need`` for steps that must always pass (reconciliation)
ALWAYS = -1e18


class MemoryStore:
    """Buckets in a dict; asyncio gives the atomicity (no await inside ``apply``)."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._state: dict[str, tuple[float, float, int]] = {}  # key -> (level, at, capacity)

    def _level(self, b: Bucket, now: float) -> float:
        st = self._state.get(b.key)
        if st is None:
            return float(b.capacity)
        level, at, _ = st
        return min(float(b.capacity), level + max(0.0, now - at) * b.rate)

    def apply_now(self, steps: Sequence[Step]) -> Outcome:
        now = self.clock()
        levels = [self._level(s.bucket, now) for s in steps]
        for i, (s, lv) in enumerate(zip(steps, levels, strict=True)):
            if lv < s.need:
                return Outcome(i, (s.need - lv) / s.bucket.rate, tuple(levels))
        out = []
        for s, lv in zip(steps, levels, strict=True):
            new = min(float(s.bucket.capacity), lv - s.take)
            self._state[s.bucket.key] = (new, now, s.bucket.capacity)
            out.append(new)
        if len(self._state) > 100_000:  # idle full buckets carry no information
            self._prune(now)
        return Outcome(None, 0.0, tuple(out))

    async def apply(self, steps: Sequence[Step]) -> Outcome:
        return self.apply_now(steps)

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no information: drop it.
        full = [k for k, (lv, at, cap) in self._state.items() if lv + (now - at) * cap / 60.0 >= cap]
        for k in full:
            del self._state[k]

    async def close(self) -> None:
        return None
