"""CORS, only for the origins in CORS_ALLOW_ORIGINS (default: none, no CORS headers at all).

A browser preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
origin is answered here with 204, before auth (preflights carry no credentials); from
any other origin it gets 403 with no CORS headers, so the browser blocks the call.
Actual responses get ``Access-Control-Allow-Origin`` through the response-prepare
signal, so streams and error envelopes carry it too. Credentials (cookies) are never
allowed: clients authenticate with a bearer key.
"""

from __future__ import annotations

from aiohttp import web

from .. import errors
from ..settings import Settings

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID, OpenAI-Organization, OpenAI-Project"
EXPOSE_HEADERS = ", ".join((
    "X-Request-ID", "X-Gateway-Provider", "X-Gateway-Model", "X-Gateway-Cache", "X-Gateway-Attempts",
    "X-Gateway-Cost-USD", "X-Gateway-Overhead-Ms", "Retry-After",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
))
MAX_AGE = "600"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    def allowed(self, origin: str | None) -> str | None:
        """The value for Access-Control-Allow-Origin, or None."""
        if not origin:
            return None
        if self.any:
            return "*"
        return origin if origin.lower() in self.origins else None

    async def on_prepare(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        allow = self.allowed(request.headers.get("Origin"))
        if allow is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if allow != "*":
            response.headers.add("Vary", "Origin")

    @web.middleware
    async def middleware(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        allow = self.allowed(request.headers.get("Origin"))
        if allow is None:
            raise errors.PermissionDenied("CORS preflight refused: this origin is not in CORS_ALLOW_ORIGINS.",
                                          code="cors_origin_not_allowed")
        headers = {
            "Access-Control-Allow-Origin": allow,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        }
        if allow != "*":
            headers["Vary"] = "Origin"
        return web.Response(status=204, headers=headers)


def setup_cors(app: web.Application, settings: Settings) -> None:
    """CORS headers on actual responses (the preflight middleware is in build_middlewares)."""
    if settings.cors_allow_origins:
        app.on_response_prepare.append(Cors(settings.cors_allow_origins).on_prepare)
