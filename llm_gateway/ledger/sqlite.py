"""The default ledger store: a SQLite file, used from one dedicated thread.

stdlib ``sqlite3`` blocks, so every call runs on a single-thread executor (the
connection never crosses threads and the event loop never waits on the disk). WAL
mode and a busy timeout let several worker processes share one file. Costs are kept
as integers of 1e-10 USD (``cost_usd_e10``; cost.py quantizes to that step) because
SQLite has no exact decimal type and ``SUM`` over REAL would drift.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from .base import TABLE, TOKEN_KEYS, LedgerRow, UsageQuery, iso

T = TypeVar("T")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    row_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    ts TEXT NOT NULL,                  -- request start, UTC: 2025-06-01T12:00:00.000000Z
    tenant TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    status INTEGER NOT NULL,
    error_type TEXT,
    cache TEXT NOT NULL,               -- HIT, MISS or BYPASS
    attempts INTEGER NOT NULL,
    fallback_used INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,     -- disjoint buckets: uncached input,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,    -- output without reasoning,
    reasoning_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,     -- = the four above
    estimated INTEGER NOT NULL,
    cost_usd_e10 INTEGER,              -- USD x 10^10, exact; NULL: unpriced model
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts);
CREATE INDEX IF NOT EXISTS {TABLE}_tenant_ts ON {TABLE} (tenant, ts);
"""

_COLUMNS = 20
_INSERT = f"""INSERT OR IGNORE INTO {TABLE} (row_id, request_id, ts, tenant, endpoint, provider, model, status,
    error_type, cache, attempts, fallback_used, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, total_tokens, estimated, cost_usd_e10, latency_ms)
    VALUES """
_ROW = "(" + ", ".join(["?"] * _COLUMNS) + ")"
#: rows per INSERT statement: a batch is written as a few multi-row INSERTs (largest
#: first), not one statement per row: sqlite3 lets go of the GIL around every statement,
#: and per row that was a hand-over to the event loop's thread and back each time. At
#: most 64: the Python work for one statement's values (~130 us) is as long as the event
#: loop may wait for the GIL (a 256-row statement moved p99 at concurrency 1 up by ~0.4 ms)
_ROWS_PER_INSERT = (64, 16, 4, 1)

_GROUP_SQL = {"tenant": "tenant", "provider": "provider", "model": "model",
              "day": "substr(ts, 1, 10)", "month": "substr(ts, 1, 7)"}
_E10 = Decimal(10) ** 10


def to_e10(cost: Decimal | None) -> int | None:
    return None if cost is None else int((cost * _E10).to_integral_value())


def from_e10(v: int | None) -> Decimal | None:
    return None if v is None else Decimal(v).scaleb(-10)


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = str(Path(path).expanduser().absolute())
        self.backend = f"sqlite:{self.path}"
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._sizes: tuple[int, ...] = ()
        self._sql: dict[int, str] = {}

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ex, fn, *args)

    # ------------------------------------------------------------- in the thread
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout = 5000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA cache_size = -1024")  # 1 MiB: the writer appends, it needs no big cache
                conn.executescript(_SCHEMA)
                self._plan_inserts(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _plan_inserts(self, conn: sqlite3.Connection) -> None:
        # A build of SQLite may allow fewer bound parameters a statement (999 before 3.32).
        most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
        self._sizes = tuple(k for k in _ROWS_PER_INSERT if k <= most)
        self._sql = {k: _INSERT + ", ".join([_ROW] * k) for k in self._sizes}

    def _write(self, rows: list[LedgerRow]) -> None:
        db = self._db()
        try:
            db.execute("BEGIN")
            done, n = 0, len(rows)
            while done < n:
                # Each INSERT's values are built just before it runs: the GIL is let go
                # during every statement, so the event loop's thread never waits for a
                # whole batch's worth of Python work here (~2 us a row).
                k = next(k for k in self._sizes if k <= n - done)
                values: list[Any] = []
                for r in rows[done:done + k]:
                    values += (r.row_id, r.request_id, iso(r.ts), r.tenant, r.endpoint, r.provider, r.model,
                               r.status, r.error_type, r.cache, r.attempts, int(r.fallback_used), r.input_tokens,
                               r.cached_input_tokens, r.output_tokens, r.reasoning_tokens, r.total_tokens,
                               int(r.estimated), to_e10(r.cost_usd), r.latency_ms)
                db.execute(self._sql[k], values)
                done += k
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _usage(self, q: UsageQuery) -> list[dict[str, Any]]:
        where, args = _where(q)
        keys = [_GROUP_SQL[g] for g in q.group_by]
        sel = "".join(f"{k}, " for k in keys)
        sql = (f"SELECT {sel}COUNT(*), SUM(status >= 400), SUM(cache = 'HIT'), "
               "SUM(cost_usd_e10 IS NULL), SUM(cost_usd_e10), SUM(input_tokens), SUM(cached_input_tokens), "
               f"SUM(output_tokens), SUM(reasoning_tokens), SUM(total_tokens) FROM {TABLE}{where}")
        if keys:
            sql += " GROUP BY " + ", ".join(keys) + " ORDER BY " + ", ".join(keys)
        out = []
        for row in self._db().execute(sql, args):
            n = len(keys)
            if row[n] == 0:
                continue  # an aggregate over no rows
            d: dict[str, Any] = dict(zip(q.group_by, row[:n], strict=True))
            d.update(requests=row[n], errors=row[n + 1] or 0, cache_hits=row[n + 2] or 0,
                     unpriced=row[n + 3] or 0, cost=from_e10(row[n + 4] or 0))
            d.update(zip(TOKEN_KEYS, (v or 0 for v in row[n + 5:n + 10]), strict=True))
            out.append(d)
        return out

    def _recent(self, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        where, args = _where(UsageQuery(tenant=tenant))
        cur = self._db().execute(
            "SELECT request_id, ts, tenant, endpoint, provider, model, status, error_type, cache, attempts, "
            "fallback_used, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, "
            f"estimated, cost_usd_e10, latency_ms FROM {TABLE}{where} ORDER BY ts DESC, rowid DESC LIMIT ?",
            (*args, limit))
        out = []
        for r in cur:
            out.append({
                "request_id": r[0], "time": r[1], "tenant": r[2], "endpoint": r[3], "provider": r[4],
                "model": r[5], "status": r[6], "error_type": r[7], "cache": r[8], "attempts": r[9],
                "fallback_used": bool(r[10]), "tokens": dict(zip(TOKEN_KEYS, r[11:16], strict=True)),
                "estimated": bool(r[16]), "cost_usd": from_e10(r[17]), "latency_ms": r[18],
            })
        return out

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------- the Store interface
    async def write(self, rows: list[LedgerRow]) -> None:
        await self._call(self._write, rows)

    async def usage(self, q: UsageQuery) -> list[dict[str, Any]]:
        return await self._call(self._usage, q)

    async def recent(self, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        return await self._call(self._recent, limit, tenant)

    async def close(self) -> None:
        try:
            await self._call(self._close)
        finally:
            self._ex.shutdown(wait=False)


def _where(q: UsageQuery) -> tuple[str, list[Any]]:
    conds, args = [], []
    if q.start is not None:
        conds.append("ts >= ?")
        args.append(iso(q.start))
    if q.end is not None:
        conds.append("ts < ?")
        args.append(iso(q.end))
    if q.tenant is not None:
        conds.append("tenant = ?")
        args.append(q.tenant)
    return (" WHERE " + " AND ".join(conds) if conds else ""), args
