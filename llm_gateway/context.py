"""Per-request state shared by the middlewares, the handler and the router."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    tenant: str | None = None
    model_asked: str | None = None
    task_type: str | None = None
    stream: bool = False
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    fallback_used: bool = False
    upstream_s: float = 0.0  # time spent waiting on upstreams (all attempts)
    cache: str = "BYPASS"
    usage: dict[str, Any] | None = None
    estimated: bool = False
    cost: Decimal | None = None
    priced: bool = True
    error_type: str | None = None
    request_logged: bool = False
    logs_response: bool = True
    #: per-attempt failures in order: {"provider", "model", "error_type", "status", "message"}
    failures: list[dict[str, Any]] = field(default_factory=list)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def overhead_ms(self) -> float:
        return max(0.0, self.elapsed_ms() - self.upstream_s * 1000.0)
