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
    #: the gateway key's id (its config name or a digest prefix), never the key itself
    key_id: str | None = None
    model_asked: str | None = None
    task_type: str | None = None
    stream: bool = False
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    fallback_used: bool = False
    upstream_s: float = 0.0  # time spent waiting on upstreams (all attempts)
    waited_s: float = 0.0  # backoff sleeps between attempts: neither the gateway's work nor the upstream's
    #: streams: seconds from the request start to the first content chunk in hand (metrics)
    first_token_s: float | None = None
    cache: str = "BYPASS"
    usage: dict[str, Any] | None = None
    estimated: bool = False
    cost: Decimal | None = None
    priced: bool = True
    error_type: str | None = None
    #: a stream that ended with an SSE error event: the status its error carries (the
    #: HTTP status was 200 already); the response log line, the metrics and the ledger
    #: record this one, so it counts as an error everywhere
    outcome_status: int | None = None
    #: the prompt estimate of ``estimated_body`` (``tokens.request_estimate``): TPM limits,
    #: the budget and an answer without vendor usage share one count of a request's prompt
    estimated_body: Any = None
    estimated_prompt: int = 0
    request_logged: bool = False
    logs_response: bool = True
    #: per-attempt failures in order: {"provider", "model", "error_type", "status", "message"}
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: wall-clock start (epoch seconds): the spend ledger's ``ts`` and the budget day
    started_at: float = field(default_factory=time.time)
    #: set by handlers whose requests go into the spend ledger (e.g. "/v1/chat/completions")
    endpoint: str | None = None
    #: the budget reservation made at admission (budget.Hold), settled when the request ends
    budget_hold: Any = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def overhead_ms(self) -> float:
        return max(0.0, self.elapsed_ms() - (self.upstream_s + self.waited_s) * 1000.0)
