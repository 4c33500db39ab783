"""The ledger's row, its queries, and the interface every store implements.

One row per finished request (chat completions, /api/query, /v1/gateway/query; streams
when they end; cache hits with cost 0). Token columns are *disjoint* buckets that sum to
``total_tokens``: ``input_tokens`` excludes cached input, ``output_tokens`` excludes
reasoning. A cache hit consumed nothing upstream: its tokens and cost are 0. ``cost_usd``
is exact (Decimal); None (SQL NULL) means the model has no price in the catalog.
Prompt and answer text are never stored.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from .. import errors
from ..budget import tenant_of
from ..context import RequestContext
from ..cost import token_buckets

TABLE = "llm_gateway_requests"
GROUP_KEYS = ("tenant", "provider", "model", "day", "month")
TOKEN_KEYS = ("input", "cached_input", "output", "reasoning", "total")


class LedgerUnavailable(errors.GatewayError):
    status = 503
    type = "server_error"
    code = "ledger_unavailable"


@dataclass(slots=True)
class LedgerRow:
    row_id: str  # unique per row (retried batches are idempotent); request ids may repeat
    request_id: str
    ts: float  # request start, epoch seconds (UTC)
    tenant: str
    endpoint: str
    provider: str | None
    model: str | None
    status: int
    error_type: str | None
    cache: str
    attempts: int
    fallback_used: bool
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int
    estimated: bool
    cost_usd: Decimal | None
    latency_ms: float

    @classmethod
    def from_ctx(cls, ctx: RequestContext, status: int) -> LedgerRow:
        hit = ctx.cache == "HIT"
        b = token_buckets(None if hit else ctx.usage)
        if hit:
            cost: Decimal | None = Decimal(0)
        elif ctx.cost is not None:
            cost = ctx.cost
        else:  # no answer (nothing billed), or an answer from an unpriced model (unknown)
            cost = None if (ctx.usage and not ctx.priced) else Decimal(0)
        provider, model = ctx.provider, ctx.model
        if provider is None and ctx.failures:  # no answer: the target that failed last, so the
            provider, model = ctx.failures[-1]["provider"], ctx.failures[-1]["model"]  # failure has a name
        return cls(
            f"{_ROW_PREFIX}{next(_ROW_SEQ):x}", ctx.request_id, ctx.started_at, tenant_of(ctx), ctx.endpoint or "",
            provider, model, ctx.outcome_status or status, ctx.error_type, ctx.cache, ctx.attempts, ctx.fallback_used,
            b["input"], b["cached_input"], b["output"], b["reasoning"], b["total"],
            bool(ctx.estimated and not hit), cost, round(ctx.elapsed_ms(), 3),
        )


#: row ids: a random per-process prefix and a counter — unique across processes and
#: replicas sharing one database, without a uuid4() per request
_ROW_PREFIX = uuid.uuid4().hex[:16] + "-"
_ROW_SEQ = itertools.count(1)


def _new_row_ids() -> None:
    """A forked child gets a prefix of its own: with its parent's, its rows would carry
    ids the parent also writes, and ``INSERT OR IGNORE`` would drop one of each pair."""
    global _ROW_PREFIX, _ROW_SEQ
    _ROW_PREFIX = uuid.uuid4().hex[:16] + "-"
    _ROW_SEQ = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_row_ids)


_iso_second: tuple[float, str] = (-1.0, "")


def iso(ts: float) -> str:
    """Fixed-width UTC ISO 8601 (sorts as text): 2025-06-01T12:00:00.000000Z.

    The same text as ``datetime.fromtimestamp(ts, UTC).strftime(...%f...)`` (the same
    microsecond rounding), with the seconds part formatted once per second: the ledger
    writes a timestamp per row (2.6 -> 0.6 us)."""
    global _iso_second
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole += 1
        us -= 1_000_000
    elif us < 0:  # before 1970
        whole -= 1
        us += 1_000_000
    sec, prefix = _iso_second
    if sec != whole:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _iso_second = (whole, prefix)
    return f"{prefix}.{us:06d}Z"


@dataclass(slots=True, frozen=True)
class UsageQuery:
    start: float | None = None  # inclusive, epoch seconds
    end: float | None = None  # exclusive
    tenant: str | None = None
    group_by: tuple[str, ...] = ()


def empty_group() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "cache_hits": 0, "unpriced": 0, "cost": Decimal(0),
            **{k: 0 for k in TOKEN_KEYS}}


class Store(Protocol):
    """Where rows go. ``write`` is idempotent per ``row_id``; every method may raise."""

    backend: str  # for logs and /api/status, never with a password

    async def write(self, rows: list[LedgerRow]) -> None: ...

    async def usage(self, q: UsageQuery) -> list[dict[str, Any]]:
        """One dict per group: the group keys, then requests, errors, cache_hits, unpriced,
        cost (Decimal) and the TOKEN_KEYS sums."""
        ...

    async def recent(self, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        """The newest rows first, as dicts of LedgerRow's fields (ts as epoch seconds)."""
        ...

    async def close(self) -> None: ...
