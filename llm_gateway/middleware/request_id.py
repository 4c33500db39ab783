"""Outermost: the request id (the client's X-Request-ID if sane, else a new UUID)."""

from __future__ import annotations

import os

from aiohttp import web

from ..context import RequestContext
from ..keys import CTX
from ..logging import request_id_var

_MAX_LEN = 128
_POOL_IDS = 256
_pool = b""
_pos = 0


def new_request_id() -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())``, from the OS's CSPRNG.

    ``uuid4()`` asks the kernel for 16 random bytes on every call (a ``getrandom``
    system call per request); here they are read 256 ids at a time."""
    global _pool, _pos
    if _pos >= len(_pool):
        _pool, _pos = os.urandom(16 * _POOL_IDS), 0
    b = bytearray(_pool[_pos:_pos + 16])
    _pos += 16
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _forget_pool() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0


if hasattr(os, "register_at_fork"):  # a forked child must never hand out its parent's ids
    os.register_at_fork(after_in_child=_forget_pool)


def usable_request_id(rid: str | None) -> bool:
    return bool(rid) and len(rid) <= _MAX_LEN and rid.isascii() and rid.isprintable()  # type: ignore[union-attr]


@web.middleware
async def request_id_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-ID")
    if not usable_request_id(rid):
        rid = new_request_id()
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
