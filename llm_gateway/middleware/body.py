"""Slow clients: the request body must arrive within CLIENT_BODY_TIMEOUT (else 408).

The body is read here once, under a deadline; aiohttp keeps the bytes on the request,
so the handler's ``await request.read()`` returns them at once. A client that sends its
headers and then trickles (or withholds) the body can therefore hold a handler for at
most CLIENT_BODY_TIMEOUT seconds. The size limit (client_max_size, MAX_REQUEST_BYTES →
413) is enforced by the same read.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .. import errors


def make_body_middleware(timeout: float) -> web.Middleware:
    @web.middleware
    async def body_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        if request.body_exists and not request.content.is_eof():  # (already all here: nothing to wait for)
            try:
                async with asyncio.timeout(timeout):
                    await request.read()
            except TimeoutError:
                raise errors.RequestTimeout(
                    f"The request body did not arrive within {timeout:g} seconds (CLIENT_BODY_TIMEOUT).",
                    code="request_timeout") from None
        return await handler(request)

    return body_middleware
