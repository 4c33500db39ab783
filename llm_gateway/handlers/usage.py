"""GET /v1/gateway/usage and GET /v1/gateway/requests: reads of the spend ledger.

Money is a decimal string. With gateway keys a caller sees only its own tenant's rows
(asking for another tenant is a 403); without keys ``tenant=`` filters freely.
Prompt and answer text are never in the ledger, so never in these answers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from .. import errors
from ..budget import tenant_of
from ..cost import usd_number
from ..keys import CTX, LEDGER, SETTINGS
from ..ledger import GROUP_KEYS, TOKEN_KEYS, Ledger, UsageQuery, empty_group

RECENT_DEFAULT, RECENT_MAX = 50, 1000


def _json(data: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _usd(v: Decimal | None) -> float | None:
    return usd_number(v)


def _ledger(request: web.Request) -> Ledger:
    ledger = request.app.get(LEDGER)
    if ledger is None:
        raise LedgerOff("The spend ledger is off (LEDGER_PATH=off and no DATABASE_URL); there is nothing to "
                        "report. Set LEDGER_PATH or DATABASE_URL to record requests.")
    return ledger


class LedgerOff(errors.GatewayError):
    status = 503
    type = "server_error"
    code = "ledger_disabled"


def _params(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    out = {}
    for k, v in request.query.items():
        if k not in allowed:
            raise errors.BadRequest(f"Unknown query parameter '{k}'; this endpoint accepts "
                                    f"{', '.join(sorted(allowed))}.", param=k, code="unknown_parameter")
        if k in out:
            raise errors.BadRequest(f"Query parameter '{k}' is given twice.", param=k, code="invalid_value")
        out[k] = v
    return out


def _read_tenant(request: web.Request, asked: str | None) -> str | None:
    """With keys, a caller reads only its own tenant's rows; without keys, any (or all)."""
    if asked is not None and not asked.strip():
        raise errors.BadRequest("'tenant' must not be empty.", param="tenant", code="invalid_value")
    if not request.app[SETTINGS].auth_enabled:
        return asked
    own = tenant_of(request[CTX])
    if asked is not None and asked != own:
        raise errors.PermissionDenied(f"This gateway key belongs to tenant '{own}'; it cannot read tenant "
                                      f"'{asked}'.", param="tenant", code="tenant_mismatch")
    return own


_LAST = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def parse_when(name: str, raw: str, end: bool) -> float:
    """An ISO date (``2025-06-01``) or datetime (``2025-06-01T12:00:00Z``; no offset = UTC).

    A date as ``to`` includes that whole day; a datetime ``to`` is exclusive."""
    s = raw.strip()
    try:
        if "T" not in s and " " not in s and ":" not in s:  # a date (also 20250601): a whole day
            d = datetime.combine(date.fromisoformat(s), time.min, UTC)
            ts = d.timestamp() + (86400.0 if end else 0.0)
        else:
            dt = datetime.fromisoformat(s.replace("z", "Z"))
            ts = (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise errors.BadRequest(f"'{name}'={raw!r} is not an ISO date (2025-06-01) or datetime "
                                "(2025-06-01T12:00:00Z).", param=name, code="invalid_value") from None
    # Outside 1970..9999 no row can exist; clamped, so that neither store meets a year 0.
    return min(max(ts, 0.0), _LAST)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _group_out(g: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: g.get(k) for k in keys}
    out.update(requests=g["requests"], errors=g["errors"], cache_hits=g["cache_hits"],
               unpriced_requests=g["unpriced"], spend_usd=_usd(g["cost"]),
               tokens={k: g[k] for k in TOKEN_KEYS})
    return out


async def usage(request: web.Request) -> web.Response:
    """GET /v1/gateway/usage?from=&to=&tenant=&group_by=tenant,model,day (also provider, month)."""
    p = _params(request, frozenset({"from", "to", "tenant", "group_by"}))
    start = parse_when("from", p["from"], end=False) if "from" in p else None
    end = parse_when("to", p["to"], end=True) if "to" in p else None
    if start is not None and end is not None and start >= end:
        raise errors.BadRequest("'from' must be before 'to'.", param="from", code="invalid_value")
    group_by: tuple[str, ...] = ()
    if p.get("group_by", "").strip():
        parts = [g.strip().lower() for g in p["group_by"].split(",") if g.strip()]
        for g in parts:
            if g not in GROUP_KEYS:
                raise errors.BadRequest(f"group_by: unknown key {g!r}; use a comma-separated list of "
                                        f"{', '.join(GROUP_KEYS)}.", param="group_by", code="invalid_value")
        if len(set(parts)) != len(parts):
            raise errors.BadRequest("group_by names a key twice.", param="group_by", code="invalid_value")
        group_by = tuple(parts)
    tenant = _read_tenant(request, p.get("tenant"))
    groups = await _ledger(request).usage(UsageQuery(start, end, tenant, group_by))
    totals = empty_group()
    for g in groups:
        for k in totals:
            totals[k] += g[k]
    out = {"object": "gateway.usage", "from": _iso(start) if start is not None else None,
           "to": _iso(end) if end is not None else None, "tenant": tenant, "group_by": list(group_by),
           "currency": "USD", "totals": _group_out(totals, ()),
           "groups": [_group_out(g, group_by) for g in groups] if group_by else []}
    return _json(out)


async def recent_requests(request: web.Request) -> web.Response:
    """GET /v1/gateway/requests?limit=&tenant= — newest first, at most 1000, no text."""
    p = _params(request, frozenset({"limit", "tenant"}))
    limit = RECENT_DEFAULT
    if "limit" in p:
        try:
            limit = int(p["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= RECENT_MAX:
            raise errors.BadRequest(f"'limit' must be a whole number from 1 to {RECENT_MAX}.", param="limit",
                                    code="invalid_value")
    tenant = _read_tenant(request, p.get("tenant"))
    rows = await _ledger(request).recent(limit, tenant)
    for r in rows:
        r["cost_usd"] = _usd(r["cost_usd"])
    return _json({"object": "list", "data": rows, "limit": limit, "tenant": tenant})


