"""Per-tenant budgets: reservation at admission, reconciliation, periods, config checks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from llm_gateway import errors
from llm_gateway.budget import Budgets, Limits
from llm_gateway.settings import ConfigError, load_config_file

D = Decimal
T0 = datetime(2025, 6, 30, 23, 0, tzinfo=UTC).timestamp()


def budgets(day: str | None = "1.00", month: str | None = None, now: list[float] | None = None) -> Budgets:
    clock = now if now is not None else [T0]
    return Budgets({"acme": Limits(D(day) if day else None, D(month) if month else None)}, lambda: clock[0])


def test_unlimited_tenant_is_not_tracked():
    b = budgets()
    assert not b.limited("other")
    assert b.admit("other", D("1000")) is None


def test_reservations_never_overspend():
    b = budgets("1.00")
    holds = []
    refused = 0
    for _ in range(10):  # ten concurrent requests of worst case 0.30: only three fit under 1.00
        try:
            holds.append(b.admit("acme", D("0.30")))
        except errors.CostLimitExceeded as e:
            assert e.code == "budget_exceeded" and e.status == 402
            refused += 1
    assert len(holds) == 3 and refused == 7
    assert b.spend["acme"].reserved_day == D("0.90")
    # they end costing much less than their worst case: the room comes back
    for h in holds:
        b.settle(h, D("0.01"))
    s = b.spend["acme"]
    assert (s.spent_day, s.reserved_day, s.spent_month, s.reserved_month) == (D("0.03"), 0, D("0.03"), 0)
    assert b.admit("acme", D("0.97")) is not None
    with pytest.raises(errors.CostLimitExceeded):
        b.admit("acme", D("0.0000000001"))


def test_settle_is_idempotent_and_none_means_zero():
    b = budgets("1.00")
    h = b.admit("acme", D("0.5"))
    b.settle(h, None)  # failed before any upstream answer: nothing spent
    b.settle(h, D("0.4"))  # a second settle is ignored
    s = b.spend["acme"]
    assert (s.spent_day, s.reserved_day) == (D(0), D(0))


def test_message_says_what_and_when():
    b = budgets("1.00")
    b.seed("acme", D("0.99"), D("0.99"))
    with pytest.raises(errors.CostLimitExceeded) as ei:
        b.admit("acme", D("0.02"))
    msg = ei.value.message
    assert "daily budget of $1" in msg and "spent $0.99" in msg and "up to $0.02" in msg and "00:00 UTC" in msg


def test_day_rolls_over_but_month_keeps_counting():
    clock = [datetime(2025, 6, 10, 23, 59, tzinfo=UTC).timestamp()]
    b = budgets("1.00", "1.50", clock)
    b.settle(b.admit("acme", D("0.9")), D("0.9"))
    with pytest.raises(errors.CostLimitExceeded):
        b.admit("acme", D("0.2"))  # the day is full
    clock[0] += 120  # next day, same month
    b.settle(b.admit("acme", D("0.5")), D("0.5"))
    with pytest.raises(errors.CostLimitExceeded) as ei:
        b.admit("acme", D("0.2"))  # 0.9 + 0.5 + 0.2 > 1.50 this month
    assert "monthly budget" in ei.value.message


def test_a_hold_from_yesterday_does_not_touch_today():
    clock = [datetime(2025, 6, 10, 23, 59, tzinfo=UTC).timestamp()]
    b = budgets("1.00", None, clock)
    h = b.admit("acme", D("0.8"))
    clock[0] += 120
    assert b.admit("acme", D("0.9")) is not None  # a new day: yesterday's reservation is gone
    b.settle(h, D("0.8"))  # billed to yesterday (the ledger's day of the request), not today
    assert b.spend["acme"].spent_day == D(0)
    assert b.spend["acme"].reserved_day == D("0.9")


def test_month_rollover_resets_month():
    clock = [T0]  # 2025-06-30 23:00
    b = budgets(None, "1.00", clock)
    b.seed("acme", D(0), D("1.00"))
    with pytest.raises(errors.CostLimitExceeded):
        b.admit("acme", D("0.01"))
    clock[0] += 3600  # 2025-07-01 00:00
    assert b.admit("acme", D("0.01")) is not None


def test_from_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[tenants.acme]\nbudget_usd_per_day = "5.00"\nbudget_usd_per_month = 100\n'
                 "requests_per_minute = 60\n\n[tenants.free]\ntokens_per_minute = 1000\n")
    b = Budgets.from_config(load_config_file(str(p)))
    assert b.limits == {"acme": Limits(D("5.00"), D("100"))}  # "free" has no budget: not tracked
    snap = b.snapshot("acme")
    assert snap is not None and snap["budget_usd_per_day"] == "5" and snap["spent_usd_today"] == "0"


@pytest.mark.parametrize("line", ['budget_usd_per_day = "-1"', 'budget_usd_per_day = "five"',
                                  "budget_usd_per_month = true", 'budget_usd_per_day = "Infinity"'])
def test_bad_budget_is_a_config_error_with_the_line(tmp_path, line):
    p = tmp_path / "c.toml"
    p.write_text(f"[tenants.acme]\n{line}\n")
    with pytest.raises(ConfigError) as ei:
        load_config_file(str(p))
    assert f"{p}:2" in str(ei.value) and "[tenants.acme]" in str(ei.value)


def test_unknown_tenant_key_names_the_line(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[tenants.acme]\nbudget_usd_per_day = "1"\nbudget_per_week = "3"\n')
    with pytest.raises(ConfigError) as ei:
        load_config_file(str(p))
    assert f"{p}:3" in str(ei.value) and "budget_per_week" in str(ei.value)
