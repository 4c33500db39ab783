"""The ledger's timestamp text: what datetime would write, made faster (ledger/base.py)."""

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
