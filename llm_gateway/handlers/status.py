"""GET /api/status — per provider: configured, available, circuit state, last error,
recent latency and error/429 counts (from ``routing.health.Health.snapshot``), plus the
spend ledger's state. Every provider of the settings is listed, mock and extras included.
No key ever appears: error texts are scrubbed of every configured secret.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..keys import CATALOG, HEALTH, LEDGER, SETTINGS


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "[REDACTED]")
    return value


async def api_status(request: web.Request) -> web.Response:
    app = request.app
    settings, health, catalog = app[SETTINGS], app[HEALTH], app[CATALOG]
    secrets = settings.secrets()
    providers: dict[str, Any] = {}
    for name, p in settings.providers.items():
        snap = health.snapshot(name)
        circuit = snap.get("circuit", "closed")
        default = catalog.default_for(name)
        row: dict[str, Any] = {
            "configured": p.configured,
            "available": p.configured and circuit != "open",
            "circuit": circuit,
            "kind": p.kind,
            "default_model": default.id if default else (p.models[0] if p.models else None),
            "simulated": p.kind == "mock",
        }
        row.update({k: _scrub(v, secrets) for k, v in snap.items()})
        providers[name] = row
    ledger = app.get(LEDGER)
    body = {
        "status": "ok",
        "mock_only": settings.mock_only,
        "providers": providers,
        "ledger": _scrub_all(ledger.status(), secrets) if ledger is not None else {"backend": None},
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _scrub_all(d: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    return {k: _scrub(v, secrets) for k, v in d.items()}
