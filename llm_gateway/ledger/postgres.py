"""The PostgreSQL ledger store (``DATABASE_URL=postgresql://...``), with asyncpg.

The pool is opened lazily, on the first write or read, so a database that is down at
start-up delays nothing: the writer retries with backoff. Costs are ``NUMERIC(24,10)``
(exact). The table is created on first use, under an advisory lock so several worker
processes can start at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from .base import TABLE, TOKEN_KEYS, LedgerRow, UsageQuery, iso

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    row_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    tenant TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    status INTEGER NOT NULL,
    error_type TEXT,
    cache TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    fallback_used BOOLEAN NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    cost_usd NUMERIC(24, 10),
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts);
CREATE INDEX IF NOT EXISTS {TABLE}_tenant_ts ON {TABLE} (tenant, ts);
COMMENT ON TABLE {TABLE} IS 'llm-gateway spend ledger: one row per finished request. Token columns are
disjoint (input excludes cached input, output excludes reasoning; they sum to total_tokens).
cost_usd NULL: the model has no price in the catalog.';
"""

_INSERT = f"""INSERT INTO {TABLE} (row_id, request_id, ts, tenant, endpoint, provider, model, status,
    error_type, cache, attempts, fallback_used, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, total_tokens, estimated, cost_usd, latency_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
    ON CONFLICT (row_id) DO NOTHING"""

_GROUP_SQL = {"tenant": "tenant", "provider": "provider", "model": "model",
              "day": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
              "month": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM')"}


def describe(url: str) -> str:
    """postgresql://host:port/db — never the user's password."""
    u = urlsplit(url)
    host = u.hostname or "localhost"
    port = f":{u.port}" if u.port else ""
    return f"postgresql://{host}{port}{u.path}"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PostgresStore:
    def __init__(self, url: str, connect_timeout: float = 5.0, command_timeout: float = 10.0) -> None:
        self._url = url
        self.backend = describe(url)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            import asyncpg  # only needed when DATABASE_URL is set

            pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4, timeout=self._connect_timeout,
                                             command_timeout=self._command_timeout)
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
                    await conn.execute(_SCHEMA)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    async def write(self, rows: list[LedgerRow]) -> None:
        """One transaction for the batch (all rows or none)."""
        pool = await self._get_pool()
        params = [
            (r.row_id, _text(r.request_id), _dt(r.ts), _text(r.tenant), r.endpoint, _text(r.provider),
             _text(r.model), r.status, r.error_type, r.cache, r.attempts, r.fallback_used, r.input_tokens, r.cached_input_tokens,
             r.output_tokens, r.reasoning_tokens, r.total_tokens, r.estimated, r.cost_usd, r.latency_ms)
            for r in rows
        ]
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, params)

    async def usage(self, q: UsageQuery) -> list[dict[str, Any]]:
        pool = await self._get_pool()
        where, args = _where(q)
        keys = [_GROUP_SQL[g] for g in q.group_by]
        sel = "".join(f"{k}, " for k in keys)
        sql = (f"SELECT {sel}COUNT(*), COUNT(*) FILTER (WHERE status >= 400), COUNT(*) FILTER (WHERE cache = 'HIT'), "
               "COUNT(*) FILTER (WHERE cost_usd IS NULL), SUM(cost_usd), SUM(input_tokens), "
               "SUM(cached_input_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(total_tokens) "
               f"FROM {TABLE}{where}")
        if keys:
            sql += " GROUP BY " + ", ".join(keys) + " ORDER BY " + ", ".join(keys)
        out = []
        for row in await pool.fetch(sql, *args):
            n = len(keys)
            if row[n] == 0:
                continue
            d: dict[str, Any] = dict(zip(q.group_by, list(row)[:n], strict=True))
            d.update(requests=row[n], errors=row[n + 1], cache_hits=row[n + 2], unpriced=row[n + 3],
                     cost=row[n + 4] if row[n + 4] is not None else Decimal(0))
            d.update(zip(TOKEN_KEYS, (int(v or 0) for v in list(row)[n + 5:n + 10]), strict=True))
            out.append(d)
        return out

    async def recent(self, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        pool = await self._get_pool()
        where, args = _where(UsageQuery(tenant=tenant))
        rows = await pool.fetch(
            "SELECT request_id, ts, tenant, endpoint, provider, model, status, error_type, cache, attempts, "
            "fallback_used, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, "
            f"estimated, cost_usd, latency_ms FROM {TABLE}{where} ORDER BY ts DESC, row_id LIMIT ${len(args) + 1}",
            *args, limit)
        return [{
            "request_id": r[0], "time": iso(r[1].timestamp()), "tenant": r[2], "endpoint": r[3], "provider": r[4],
            "model": r[5], "status": r[6], "error_type": r[7], "cache": r[8], "attempts": r[9],
            "fallback_used": r[10], "tokens": dict(zip(TOKEN_KEYS, (int(v) for v in list(r)[11:16]), strict=True)),
            "estimated": r[16], "cost_usd": r[17], "latency_ms": r[18],
        } for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _where(q: UsageQuery) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []
    if q.start is not None:
        args.append(_dt(q.start))
        conds.append(f"ts >= ${len(args)}")
    if q.end is not None:
        args.append(_dt(q.end))
        conds.append(f"ts < ${len(args)}")
    if q.tenant is not None:
        args.append(q.tenant)
        conds.append(f"tenant = ${len(args)}")
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def _text(v: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL (SQLite can): it is stored as U+FFFD."""
    return v.replace("\x00", "\ufffd") if v is not None and "\x00" in v else v
