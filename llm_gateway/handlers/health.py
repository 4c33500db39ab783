"""GET /healthz — 200 as soon as the gateway accepts requests."""

from __future__ import annotations

from aiohttp import web

_OK = b'{"status":"ok"}'


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")
