"""Ledger rows: timestamp text as datetime would write it (made faster), row ids unique per process."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from llm_gateway.ledger.base import iso


def test_ledger_iso_matches_datetime_to_the_microsecond() -> None:
    rng = random.Random(7)
    stamps = [0.0, 1.9999995, 1.0000005, 1748779200.0, 1748779200.9999996, 1748779200.0000004, -0.25, -1.5]
    stamps += [rng.uniform(0, 4e9) for _ in range(20000)] + [1748779200 + rng.random() for _ in range(2000)]
    for ts in stamps:
        assert iso(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ts


def test_a_forked_child_writes_row_ids_of_its_own() -> None:
    import os

    import pytest

    from llm_gateway.context import RequestContext
    from llm_gateway.ledger.base import LedgerRow

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    ctx = RequestContext("req-1")
    LedgerRow.from_ctx(ctx, 200)  # the parent has written rows
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, LedgerRow.from_ctx(ctx, 200).row_id.encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    parent = LedgerRow.from_ctx(ctx, 200).row_id
    assert child and child.split("-")[0] != parent.split("-")[0]


def test_a_failed_request_is_recorded_under_the_target_that_failed() -> None:
    from llm_gateway.context import RequestContext
    from llm_gateway.ledger.base import LedgerRow

    ctx = RequestContext("r")
    ctx.failures.append({"provider": "gemini", "model": "gemini-2.0-flash", "error_type": "upstream_unavailable",
                         "status": 503, "message": "down"})
    row = LedgerRow.from_ctx(ctx, 503)
    assert (row.provider, row.model, row.status) == ("gemini", "gemini-2.0-flash", 503)
    ok = RequestContext("s")
    ok.provider, ok.model = "openai", "gpt-4o-mini"
    ok.failures.append(ctx.failures[0])  # failed over: the row names who answered
    assert (LedgerRow.from_ctx(ok, 200).provider, LedgerRow.from_ctx(ok, 200).model) == ("openai", "gpt-4o-mini")
