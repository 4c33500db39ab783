"""The middleware chain, in one place (first = outermost):

request_id → access log → errors → cors → auth → rate limit → body → handler (→ cache).

Errors sit inside the access log so the log records the final status; auth sits
before limits and cache so anonymous traffic can neither read the cache nor burn quota.
CORS answers browser preflights before auth (they carry no credentials). The rate
limit admits before the body is read; ``body`` reads it under CLIENT_BODY_TIMEOUT.
Optional steps are left out of the list when not configured (no keys: no auth; no
limits: no rate limit; no CORS origins: no CORS), so they cost nothing.
Response headers that must also reach streams and error envelopes (CORS, x-ratelimit-*)
are added by ``on_response_prepare`` signals installed in ``app.create_app``.
"""

from __future__ import annotations

from aiohttp import web

from ..settings import Settings
from .access_log import access_log_middleware
from ..limits import limits_configured
from .auth import all_key_digests, make_auth_middleware
from .body import make_body_middleware
from .cors import Cors
from .errors import errors_middleware
from .ratelimit import ratelimit_middleware
from .request_id import request_id_middleware


def build_middlewares(settings: Settings) -> list[web.Middleware]:
    chain: list[web.Middleware] = [request_id_middleware, access_log_middleware, errors_middleware]
    if settings.cors_allow_origins:
        chain.append(Cors(settings.cors_allow_origins).middleware)
    if settings.auth_enabled:
        chain.append(make_auth_middleware(all_key_digests(settings)))
    if limits_configured(settings):
        chain.append(ratelimit_middleware)
    chain.append(make_body_middleware(settings.client_body_timeout))
    # The response cache is not a middleware: its key needs the parsed body and the
    # resolved target, so the handlers consult it after parsing (cache/__init__.py).
    return chain
