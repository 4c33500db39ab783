"""Backoff policy: exponential delays with jitter from ``backoff``'s wait generator.

``INITIAL_BACKOFF * BACKOFF_FACTOR**n`` capped at ``MAX_BACKOFF`` (``backoff.expo``),
then a ``JITTER`` fraction of each delay is drawn at random: the delay lies in
``[d * (1 - JITTER), d]`` and never exceeds the cap. A delay the vendor asks for
(Retry-After and friends) wins over the computed one; when it exceeds MAX_BACKOFF
the router moves on to the next target instead of sleeping. ``rand`` and the
router's ``sleep`` are injected so tests never wait in real time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import backoff

from ..settings import Settings


class RetryPolicy:
    def __init__(self, settings: Settings, rand: Callable[[], float] = random.random) -> None:
        self.max_retries = settings.max_retries
        self.initial_ms = settings.initial_backoff_ms
        self.max_ms = settings.max_backoff_ms
        self.factor = settings.backoff_factor
        self.jitter = settings.jitter
        self.rand = rand

    def delays(self) -> Iterator[float]:
        """Computed delays in seconds, one per retry (jitter applied)."""
        gen = backoff.expo(base=self.factor, factor=self.initial_ms, max_value=self.max_ms)
        next(gen)  # backoff's generators yield None first (the .send() priming step)
        for _ in range(self.max_retries):
            d = min(float(next(gen)), self.max_ms)
            d -= d * self.jitter * self.rand()
            yield d / 1000.0

    def delay_for(self, computed: float, retry_after: float | None) -> float | None:
        """The wait before the next try, or None when the vendor's ask exceeds the cap."""
        if retry_after is None:
            return computed
        if retry_after * 1000.0 > self.max_ms:
            return None
        return retry_after
