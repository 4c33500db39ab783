"""Outermost: the request id (the client's X-Request-ID if sane, else a new UUID)."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..context import RequestContext
from ..keys import CTX
from ..logging import request_id_var

_MAX_LEN = 128


def usable_request_id(rid: str | None) -> bool:
    return bool(rid) and len(rid) <= _MAX_LEN and rid.isascii() and rid.isprintable()  # type: ignore[union-attr]


@web.middleware
async def request_id_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-ID")
    if not usable_request_id(rid):
        rid = str(uuid.uuid4())
    ctx = RequestContext(rid)  # type: ignore[arg-type]
    request[CTX] = ctx
    token = request_id_var.set(rid)
    try:
        resp = await handler(request)
    finally:
        request_id_var.reset(token)
    if not resp.prepared:
        resp.headers["X-Request-ID"] = ctx.request_id
    return resp
