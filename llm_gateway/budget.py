"""Worst-case cost estimates and per-tenant spend budgets (USD per UTC day / month).

Worst case of a request = its prompt tokens (``tokens.estimate_request_tokens``: messages,
images, tool definitions and response schema) at the input price, plus its output cap
(``max_tokens``/``max_completion_tokens`` in the body, else the model's
``max_output_tokens`` from the catalog, else ``cost.DEFAULT_OUTPUT_CAP``) at the output
price, times ``n``; over a chain of targets, the dearest one counts.

Budgets come from the TOML config::

    [tenants.acme]
    budget_usd_per_day = "5.00"
    budget_usd_per_month = "100"

A request is admitted only when ``spent + reserved + worst case`` fits under each of its
tenant's budgets; the worst case is reserved in the same synchronous step (no ``await``
between the check and the reservation), so concurrent requests in one process can never
overspend together. When the request ends (the access-log hook) the reservation is
replaced by the actual cost. Spend so far is seeded from the ledger at start-up.
Unpriced models count as 0 (their cost is unknown). Each worker process enforces the
budget on its own view, synced with the shared ledger every BUDGET_SYNC_INTERVAL: with
``--workers N`` each process may admit up to what remained before the next sync, so a
tenant can overshoot by about N-1 times that (the ledger still records every cent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from . import errors
from .context import RequestContext
from .cost import estimate_usd, fmt_usd, output_cap
from .keys import BUDGETS, SETTINGS
from .routing.resolve import Target
from .tokens import estimate_request_tokens, request_estimate

DEFAULT_TENANT = "default"
ZERO = Decimal(0)


def tenant_of(ctx: RequestContext) -> str:
    """The tenant a request is billed to: the key's (or the body's, without keys), else "default"."""
    return ctx.tenant or DEFAULT_TENANT


def body_tenant(request: web.Request, ctx: RequestContext, t: str | None) -> None:
    """A body ``tenant`` (SPEC 5) counts only without gateway keys; with keys it must be
    the key's own (403 otherwise)."""
    if t is None:
        return
    if request.app[SETTINGS].auth_enabled:
        if t != ctx.tenant:
            raise errors.PermissionDenied(
                f"This gateway key belongs to tenant '{ctx.tenant}'; it cannot act for tenant '{t}'.",
                param="tenant", code="tenant_mismatch")
        return
    if not t or len(t) > 128 or not t.isprintable():
        raise errors.BadRequest("'tenant' must be printable text of 1 to 128 characters.", param="tenant",
                                code="invalid_value")
    ctx.tenant = t


# ------------------------------------------------------------------ estimates
@dataclass(slots=True)
class Estimate:
    target: Target  # the target the worst case was computed for (the dearest priced one)
    input_tokens: int
    output_cap: int
    output_cap_basis: str  # max_tokens | max_completion_tokens | model_max_output_tokens | default
    usd: Decimal | None  # None: no priced target
    unpriced: list[Target] = field(default_factory=list)  # targets whose cost is unknown


def worst_case(body: dict[str, Any], targets: list[Target], input_tokens: int | None = None) -> Estimate:
    """The worst-case cost of ``body`` over ``targets`` (the dearest priced target wins)."""
    if input_tokens is None:
        input_tokens = estimate_request_tokens(body)
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    best: Estimate | None = None
    unpriced: list[Target] = []
    for t in targets:
        entry = t.entry
        cap, basis = output_cap(body, entry.max_output_tokens if entry else None)
        usd = estimate_usd(entry.price if entry else None, input_tokens, cap * n)
        if usd is None:
            unpriced.append(t)
        if best is None or (usd is not None and (best.usd is None or usd > best.usd)):
            best = Estimate(t, input_tokens, cap * n, basis, usd)
    assert best is not None, "targets is never empty"
    best.unpriced = unpriced
    return best


# ------------------------------------------------------------------ budgets
@dataclass(slots=True)
class Hold:
    tenant: str
    amount: Decimal
    day: str
    month: str
    settled: bool = False


@dataclass(slots=True)
class TenantSpend:
    day: str = ""
    month: str = ""
    spent_day: Decimal = ZERO
    spent_month: Decimal = ZERO
    reserved_day: Decimal = ZERO
    reserved_month: Decimal = ZERO


@dataclass(slots=True, frozen=True)
class Limits:
    per_day: Decimal | None
    per_month: Decimal | None


def _periods(ts: float) -> tuple[str, str]:
    d = datetime.fromtimestamp(ts, UTC)
    return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")


class Budgets:
    def __init__(self, limits: Mapping[str, Limits], now: Callable[[], float] = time.time) -> None:
        self.limits = dict(limits)
        self.now = now
        self.spend: dict[str, TenantSpend] = {t: TenantSpend() for t in self.limits}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], now: Callable[[], float] = time.time) -> Budgets:
        limits = {}
        for name, tbl in (config.get("tenants") or {}).items():
            day, month = tbl.get("budget_usd_per_day"), tbl.get("budget_usd_per_month")
            if day is None and month is None:
                continue
            limits[str(name)] = Limits(None if day is None else Decimal(str(day).strip()),
                                       None if month is None else Decimal(str(month).strip()))
        return cls(limits, now)

    def limited(self, tenant: str) -> bool:
        return tenant in self.limits

    def _current(self, tenant: str, day: str, month: str) -> TenantSpend:
        s = self.spend[tenant]
        if s.month != month:
            if s.month and s.month > month:
                return s  # a clock step backwards: keep the newer period
            s.month, s.spent_month, s.reserved_month = month, ZERO, ZERO
        if s.day != day:
            if s.day and s.day > day:
                return s
            s.day, s.spent_day, s.reserved_day = day, ZERO, ZERO
        return s

    def seed(self, tenant: str, spent_day: Decimal, spent_month: Decimal) -> None:
        """Spend already in the ledger for the current day and month (at start-up)."""
        if tenant not in self.limits:
            return
        day, month = _periods(self.now())
        s = self._current(tenant, day, month)
        s.spent_day, s.spent_month = spent_day, spent_month

    def merge(self, tenant: str, ledger_day: Decimal, ledger_month: Decimal) -> None:
        """Spend the shared ledger knows of (other workers and replicas included). Both the
        ledger's total and our own count are lower bounds of the truth; keep the larger."""
        if tenant not in self.limits:
            return
        day, month = _periods(self.now())
        s = self._current(tenant, day, month)
        s.spent_day = max(s.spent_day, ledger_day)
        s.spent_month = max(s.spent_month, ledger_month)

    def admit(self, tenant: str, amount: Decimal) -> Hold | None:
        """Reserve ``amount`` or raise 402 budget_exceeded. Synchronous on purpose."""
        lim = self.limits.get(tenant)
        if lim is None:
            return None
        day, month = _periods(self.now())
        s = self._current(tenant, day, month)
        for period, limit, spent, reserved, resets in (
            ("daily", lim.per_day, s.spent_day, s.reserved_day, "at 00:00 UTC"),
            ("monthly", lim.per_month, s.spent_month, s.reserved_month, "on the 1st of the month (UTC)"),
        ):
            if limit is not None and spent + reserved + amount > limit:
                raise errors.BudgetExceeded(
                    f"Tenant '{tenant}' would exceed its {period} budget of ${fmt_usd(limit)}: spent "
                    f"${fmt_usd(spent)}, ${fmt_usd(reserved)} reserved by requests in flight, and this "
                    f"request may cost up to ${fmt_usd(amount)} (worst case; set max_tokens to lower it). "
                    f"The budget resets {resets}.")
        s.reserved_day += amount
        s.reserved_month += amount
        return Hold(tenant, amount, day, month)

    def settle(self, hold: Hold | None, actual: Decimal | None) -> None:
        """Replace a reservation by the actual cost (None: unknown/no call → 0). Idempotent."""
        if hold is None or hold.settled:
            return
        hold.settled = True
        s = self.spend.get(hold.tenant)
        if s is None:
            return
        cost = actual if actual is not None else ZERO
        if s.month == hold.month:
            s.reserved_month = max(ZERO, s.reserved_month - hold.amount)
            s.spent_month += cost
        if s.day == hold.day:
            s.reserved_day = max(ZERO, s.reserved_day - hold.amount)
            s.spent_day += cost

    def snapshot(self, tenant: str) -> dict[str, Any] | None:
        lim = self.limits.get(tenant)
        if lim is None:
            return None
        day, month = _periods(self.now())
        s = self._current(tenant, day, month)
        return {
            "budget_usd_per_day": None if lim.per_day is None else fmt_usd(lim.per_day),
            "budget_usd_per_month": None if lim.per_month is None else fmt_usd(lim.per_month),
            "spent_usd_today": fmt_usd(s.spent_day), "spent_usd_this_month": fmt_usd(s.spent_month),
            "reserved_usd": fmt_usd(s.reserved_day),
        }


def admit(request: web.Request, ctx: RequestContext, body: dict[str, Any], targets: list[Target],
          estimate: Estimate | None = None) -> None:
    """Admission control for one request: reserve its worst case against its tenant's budget.

    Costs nothing for tenants without a budget (no token estimate is made)."""
    budgets = request.app.get(BUDGETS)
    tenant = tenant_of(ctx)
    if budgets is None or not budgets.limited(tenant):
        return
    if estimate is None:
        estimate = worst_case(body, targets, request_estimate(ctx, body))
    ctx.budget_hold = budgets.admit(tenant, estimate.usd or ZERO)


def on_request_end(budgets: Budgets) -> Callable[[web.Request, RequestContext, int], None]:
    def hook(request: web.Request, ctx: RequestContext, status: int) -> None:
        if ctx.budget_hold is not None:
            cost = ZERO if ctx.cache == "HIT" else ctx.cost
            budgets.settle(ctx.budget_hold, cost)

    return hook
