"""The spend ledger: SQLite and the real PostgreSQL, outages, a full queue, shutdown.

PostgreSQL tests create a uniquely named database on 127.0.0.1:5432 and drop it after.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from llm_gateway.keys import LEDGER
from llm_gateway.ledger import Ledger, LedgerRow, UsageQuery
from llm_gateway.ledger.postgres import PostgresStore, describe
from llm_gateway.ledger.sqlite import SQLiteStore

D = Decimal
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = 86400.0
T0 = 1748736000.0  # 2025-06-01T00:00:00Z


def row(i: int, *, ts: float = T0, tenant: str = "acme", model: str = "gpt-4o-mini", cost: str | None = "0.1",
        cache: str = "MISS", status: int = 200) -> LedgerRow:
    return LedgerRow(uuid.uuid4().hex, f"req-{i}", ts, tenant, "/api/query", "openai", model, status, None, cache,
                     1, False, 10, 5, 3, 2, 20, False, None if cost is None else D(cost), 12.5)


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh, uniquely named database on the local PostgreSQL, dropped afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:  # pragma: no cover - CI starts PostgreSQL
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {e}")
    name = f"llm_gateway_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "sub" / "ledger.sqlite3"))  # the directory is created
        yield s
        await s.close()
        return
    async with pg_database() as url:
        s2 = PostgresStore(url)
        yield s2
        await s2.close()


# ---------------------------------------------------------------- the stores
async def test_store_sums_exactly_and_groups(store):
    rows = [row(i, ts=T0 + i * 3600, cost="0.1") for i in range(10)]  # ten × $0.1 on 2025-06-01
    rows += [row(10, ts=T0 + DAY, tenant="globex", model="gpt-4o", cost="0.0000000001")]
    rows += [row(11, ts=T0 + DAY + 1, tenant="globex", model="llama", cost=None)]  # unpriced
    rows += [row(12, ts=T0 + DAY + 2, cache="HIT", cost="0"), row(13, ts=T0 + DAY + 3, status=502, cost="0")]
    await store.write(rows[:7])
    await store.write(rows[7:])
    await store.write(rows[:3])  # a retried batch: idempotent per row_id

    groups = await store.usage(UsageQuery())
    assert len(groups) == 1
    g = groups[0]
    assert g["requests"] == 14 and g["errors"] == 1 and g["cache_hits"] == 1 and g["unpriced"] == 1
    assert g["cost"] == D("1.0000000001")  # exact: no float drift
    assert (g["input"], g["cached_input"], g["output"], g["reasoning"], g["total"]) == (140, 70, 42, 28, 280)

    by = await store.usage(UsageQuery(group_by=("tenant", "day")))
    assert [(x["tenant"], x["day"], x["requests"], x["cost"]) for x in by] == [
        ("acme", "2025-06-01", 10, D("1")), ("acme", "2025-06-02", 2, D(0)),
        ("globex", "2025-06-02", 2, D("0.0000000001"))]
    by = await store.usage(UsageQuery(group_by=("month", "model")))
    assert [(x["month"], x["model"]) for x in by] == [("2025-06", "gpt-4o"), ("2025-06", "gpt-4o-mini"),
                                                      ("2025-06", "llama")]
    ranged = await store.usage(UsageQuery(start=T0 + DAY, end=T0 + 2 * DAY, tenant="acme"))
    assert ranged[0]["requests"] == 2
    assert await store.usage(UsageQuery(start=T0 + 5 * DAY)) == []

    recent = await store.recent(3, None)
    assert [r["request_id"] for r in recent] == ["req-13", "req-12", "req-11"]
    assert recent[0]["time"] == "2025-06-02T00:00:03.000000Z"
    assert recent[2]["cost_usd"] is None and recent[0]["cost_usd"] == D(0)
    assert recent[0]["tokens"] == {"input": 10, "cached_input": 5, "output": 3, "reasoning": 2, "total": 20}
    assert [r["request_id"] for r in await store.recent(5, "globex")] == ["req-11", "req-10"]


async def test_store_writes_a_large_batch_row_for_row(store):
    """345 rows in one write (the SQLite store sends them as several multi-row INSERTs of
    different sizes), then a retried overlap: every row once, every value intact."""
    rows = [row(i, ts=T0 + i, cost=f"0.{i:04d}") for i in range(345)]
    await store.write(rows)
    await store.write(rows[300:] + [row(345, ts=T0 + 345, cost="1")])
    g = (await store.usage(UsageQuery()))[0]
    assert g["requests"] == 346
    assert g["cost"] == sum(D(f"0.{i:04d}") for i in range(345)) + 1
    recent = await store.recent(400, None)
    assert [r["request_id"] for r in recent] == [f"req-{i}" for i in reversed(range(346))]
    assert all(r["tokens"] == {"input": 10, "cached_input": 5, "output": 3, "reasoning": 2, "total": 20}
               for r in recent)


async def test_sqlite_store_under_a_low_parameter_limit(tmp_path):
    """An SQLite built with the old limit of 999 bound parameters a statement: smaller
    INSERTs, the same rows."""
    s = SQLiteStore(str(tmp_path / "low.sqlite3"))
    try:
        conn = await s._call(s._db)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        await s._call(s._plan_inserts, conn)
        assert max(s._sizes) * 20 <= 999
        await s.write([row(i, ts=T0 + i) for i in range(123)])
        assert (await s.usage(UsageQuery()))[0]["requests"] == 123
    finally:
        await s.close()


def test_describe_never_shows_the_password():
    assert describe("postgresql://user:s3cret@db.example:5433/ledger") == "postgresql://db.example:5433/ledger"


# ---------------------------------------------------------------- through the gateway
async def test_gateway_writes_sqlite(gateway, vendor_env, tmp_path):
    path = tmp_path / "l.sqlite3"
    gw = await gateway({**vendor_env, "LEDGER_PATH": str(path)})
    for i in range(3):
        async with gw.http.post(gw.url + "/api/query", json={"query": f"q {i}", "model": "openai"}) as r:
            assert r.status == 200
    await gw.server.close()  # clean stop: everything is written
    with sqlite3.connect(path) as db:
        got = db.execute("SELECT tenant, endpoint, provider, model, status, cost_usd_e10, total_tokens "
                         "FROM llm_gateway_requests ORDER BY ts").fetchall()
    # the fake counts 2 + 3 prompt tokens, 4 output: (5 x 0.15 + 4 x 0.60) / 1M = $0.00000315
    assert got == [("default", "/api/query", "openai", "gpt-4o-mini", 200, 31500, 9)] * 3


async def test_gateway_writes_postgresql(gateway, vendor_env, pg_url):
    import asyncpg

    gw = await gateway({**vendor_env, "DATABASE_URL": pg_url})
    async with gw.http.post(gw.url + "/v1/gateway/query", json={"query": "q 1", "model": "openai",
                                                                 "request_id": "pg-1"}) as r:
        assert r.status == 200
    async with gw.http.get(gw.url + "/v1/gateway/requests") as r:
        data = (await r.json())["data"]
    assert [(d["request_id"], d["cost_usd"]) for d in data] == [("pg-1", 0.00000315)]
    async with gw.http.get(gw.url + "/api/status") as r:
        assert (await r.json())["ledger"]["backend"] == "postgresql://127.0.0.1:5432/" + pg_url.rsplit("/", 1)[1]
    await gw.server.close()
    conn = await asyncpg.connect(pg_url)
    try:
        rec = await conn.fetchrow("SELECT request_id, tenant, cost_usd, total_tokens FROM llm_gateway_requests")
    finally:
        await conn.close()
    assert tuple(rec) == ("pg-1", "default", D("0.0000031500"), 9)


# ---------------------------------------------------------------- outages
@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
async def test_a_dead_ledger_never_fails_a_request(gateway, vendor_env, tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {"LEDGER_PATH": str(blocker / "ledger.sqlite3")} if where == "sqlite" else \
          {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"}  # nothing listens on port 1
    gw = await gateway({**vendor_env, **env, "LEDGER_FLUSH_TIMEOUT": "0"})
    ledger = gw.app[LEDGER]
    for i in range(10):
        async with asyncio.timeout(5):
            async with gw.http.post(gw.url + "/api/query", json={"query": f"q {i}", "model": "openai"}) as r:
                assert r.status == 200
    await _until(lambda: ledger.failing)
    states = [e["state"] for e in gw.events("ledger")]
    assert states.count("failing") == 1  # one line when it starts failing, not one per row
    async with gw.http.get(gw.url + "/api/status") as r:
        assert (await r.json())["ledger"]["failing"] is True
    async with gw.http.get(gw.url + "/v1/gateway/usage") as r:
        body = await r.json()
        assert r.status == 503 and body["error"]["code"] == "ledger_unavailable"
    await gw.server.close()
    lost = [e for e in gw.events("ledger") if e["state"] == "lost"]
    assert len(lost) == 1 and lost[0]["lost"] == 10


class GateStore:
    """A store whose writes wait on ``open`` (a hung database) and can be made to fail."""

    backend = "gate:test"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.fail = False
        self.attempts = 0
        self.attempted = asyncio.Event()

    async def write(self, rows: list[LedgerRow]) -> None:
        self.attempts += 1
        self.attempted.set()
        await self.open.wait()
        if self.fail:
            raise ConnectionError("database is down")
        await self.inner.write(rows)

    async def usage(self, q: UsageQuery) -> list[dict[str, Any]]:
        return await self.inner.usage(q)

    async def recent(self, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        return await self.inner.recent(limit, tenant)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_hung_ledger_never_slows_a_request_and_a_full_queue_drops_with_one_line(gateway, vendor_env,
                                                                                        tmp_path):
    gw = await gateway({**vendor_env, "LEDGER_QUEUE_SIZE": "3"})
    ledger = gw.app[LEDGER]
    gate = GateStore(SQLiteStore(str(tmp_path / "gate.sqlite3")))
    ledger.store = gate
    for i in range(8):  # the writer holds the first batch; three more fit in the queue; four are dropped
        async with asyncio.timeout(5):
            async with gw.http.post(gw.url + "/api/query", json={"query": f"q {i}", "model": "openai"}) as r:
                assert r.status == 200
    assert ledger.dropped >= 4
    dropping = [e for e in gw.events("ledger") if e["state"] == "dropping"]
    assert len(dropping) == 1 and "queue is full (3 rows" in dropping[0]["message"]
    gate.open.set()  # the database answers again
    assert await ledger.flush(5)
    async with gw.http.post(gw.url + "/api/query", json={"query": "after", "model": "openai"}) as r:
        assert r.status == 200
    states = [e["state"] for e in gw.events("ledger")]
    assert states.count("dropping") == 1 and states.count("accepting") == 1
    accepting = next(e for e in gw.events("ledger") if e["state"] == "accepting")
    assert accepting["dropped"] == ledger.dropped
    assert await ledger.flush(5)
    assert ledger.written == 8 - ledger.dropped + 1


async def test_rows_waiting_on_a_down_store_are_written_on_a_clean_stop(gateway, vendor_env, tmp_path):
    path = tmp_path / "late.sqlite3"
    gw = await gateway(vendor_env)
    ledger = gw.app[LEDGER]
    ledger.retry_initial = 60.0  # a long backoff: only the shutdown can cut it short
    gate = GateStore(SQLiteStore(str(path)))
    gate.fail = True
    gate.open.set()
    ledger.store = gate
    for i in range(5):
        async with gw.http.post(gw.url + "/api/query", json={"query": f"q {i}", "model": "openai"}) as r:
            assert r.status == 200
    await _until(lambda: ledger.failing)
    gate.fail = False  # the database is back, but the writer is in a 60 s backoff
    await gw.server.close()  # shutdown interrupts the wait and writes the queue out
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM llm_gateway_requests").fetchone() == (5,)
    assert not [e for e in gw.events("ledger") if e["state"] == "lost"]


async def test_writer_retries_with_backoff_then_recovers(tmp_path):
    gate = GateStore(SQLiteStore(str(tmp_path / "r.sqlite3")))
    gate.fail = True
    gate.open.set()
    ledger = Ledger(gate, queue_size=100, flush_timeout=1, retry_initial=0.001, retry_max=0.004)
    await ledger.start()
    for i in range(3):
        ledger.record(row(i))
    await _until(lambda: gate.attempts >= 4)  # retried, each wait doubling (capped at retry_max)
    assert ledger.failing and len(ledger._q) == 3
    gate.fail = False
    assert await ledger.flush(5)
    assert not ledger.failing and ledger.written == 3
    await ledger.close()
    with sqlite3.connect(tmp_path / "r.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM llm_gateway_requests").fetchone() == (3,)


class PickyStore(GateStore):
    """Up, but refuses any batch holding a row of tenant "poison" (a value it cannot store)."""

    async def write(self, rows: list[LedgerRow]) -> None:
        self.attempts += 1
        if self.fail:
            raise ConnectionError("database is down")
        if any(r.tenant == "poison" for r in rows):
            raise ValueError("invalid byte sequence for encoding UTF8: 0x00")
        await self.inner.write(rows)


async def test_a_row_the_store_refuses_does_not_hold_back_the_others(tmp_path):
    picky = PickyStore(SQLiteStore(str(tmp_path / "p.sqlite3")))
    ledger = Ledger(picky, queue_size=100, flush_timeout=1, retry_initial=0.001, retry_max=0.004)
    await ledger.start()
    ledger.record(row(0))
    ledger.record(row(1, tenant="poison"))
    for i in range(2, 6):
        ledger.record(row(i))
    assert await ledger.flush(5)  # written row by row after the batch kept failing
    assert ledger.written == 5 and ledger.dropped == 1 and not ledger.failing
    ledger.record(row(6))
    assert await ledger.flush(5)
    await ledger.close()
    with sqlite3.connect(tmp_path / "p.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM llm_gateway_requests").fetchone() == (6,)


async def test_an_outage_is_not_mistaken_for_refused_rows(tmp_path):
    picky = PickyStore(SQLiteStore(str(tmp_path / "o.sqlite3")))
    picky.fail = True
    ledger = Ledger(picky, queue_size=100, flush_timeout=1, retry_initial=0.001, retry_max=0.004)
    await ledger.start()
    for i in range(10):
        ledger.record(row(i))
    await _until(lambda: picky.attempts >= 20)  # several rounds, row-by-row tries among them
    assert ledger.failing and len(ledger._q) == 10 and ledger.dropped == 0
    picky.fail = False
    assert await ledger.flush(5)
    assert ledger.written == 10
    await ledger.close()


async def test_postgres_stores_text_with_nul(pg_url):
    s = PostgresStore(pg_url)
    try:
        await s.write([row(0, tenant="a\x00b", model="m\x00")])
        recent = await s.recent(1, None)
        assert recent[0]["tenant"] == "a\ufffdb" and recent[0]["model"] == "m\ufffd"
    finally:
        await s.close()


async def _until(cond: Any, timeout: float = 5.0) -> None:
    """Wait for a condition the ledger's writer task makes true (yields to it, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def test_rows_never_carry_text():
    fields = set(LedgerRow.__dataclass_fields__)
    assert not {"query", "prompt", "messages", "answer", "response", "text", "content"} & fields


async def test_budgets_see_spend_from_other_workers_sharing_the_ledger(gateway, vendor_env, tmp_path):
    """Two gateways (as --workers or replicas) on one ledger: spend in one counts in the other."""
    from llm_gateway.keys import BUDGETS

    shared = {**vendor_env, "LEDGER_PATH": str(tmp_path / "shared.sqlite3"), "BUDGET_SYNC_INTERVAL": "0.05",
              "CACHE_ENABLED": "false"}
    config = '[tenants.default]\nbudget_usd_per_day = "0.00001"\n'
    gw_a = await gateway(shared, config=config)
    gw_b = await gateway(shared, config=config)
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with gw_a.http.post(gw_a.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200  # spends ~$0.000003 of the $0.00001 day
    await _until(lambda: gw_b.app[BUDGETS].spend["default"].spent_day > 0)
    async with gw_b.http.post(gw_b.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 402  # its own count is 0, but the ledger knows what A spent
        assert (await r.json())["error"]["code"] == "budget_exceeded"


async def test_a_prompt_moved_into_tools_still_counts_against_the_budget(gateway, vendor_env, fake_openai):
    """The audit's bypass: a huge tool schema with max_tokens 10 looked like a $0.0001
    request; it is refused before any upstream call."""
    gw = await gateway({**vendor_env, "CACHE_ENABLED": "false"},
                       config='[tenants.default]\nbudget_usd_per_day = "0.001"\n')
    tools = [{"type": "function", "function": {"name": "f", "description": "word " * 20_000,
                                               "parameters": {"type": "object", "properties": {}}}}]
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with gw.http.post(gw.url + "/v1/chat/completions", json={**body, "tools": tools}) as r:
        assert r.status == 402 and (await r.json())["error"]["code"] == "budget_exceeded"
    assert fake_openai.requests == []
    async with gw.http.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
