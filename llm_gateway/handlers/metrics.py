"""GET /metrics — Prometheus text format (no gateway key: protect it by network policy)."""

from __future__ import annotations

from aiohttp import web

from ..keys import METRICS
from ..metrics import CONTENT_TYPE


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
