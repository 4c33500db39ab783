"""The middleware chain, in one place (first = outermost):

request_id → access log → errors → auth → handler.

Errors sit inside the access log so the log records the final status; auth sits
before any handler so anonymous traffic can neither read the cache nor burn quota.
"""

from __future__ import annotations

from aiohttp import web

from ..settings import Settings
from .access_log import access_log_middleware
from .auth import key_digests, make_auth_middleware
from .errors import errors_middleware
from .request_id import request_id_middleware


def build_middlewares(settings: Settings) -> list[web.Middleware]:
    chain: list[web.Middleware] = [request_id_middleware, access_log_middleware, errors_middleware]
    if settings.gateway_api_keys:
        chain.append(make_auth_middleware(key_digests(settings.gateway_api_keys)))
    return chain
