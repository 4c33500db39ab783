"""Gateway keys (SPEC 3, 10): ``Authorization: Bearer <key>`` or ``x-api-key``.

Keys are kept only as SHA-256 digests; a presented key is hashed and looked up, so
the comparison does not leak the key's bytes through timing. The tenant comes from
the key.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from .. import errors
from ..keys import CTX, SETTINGS

_PROTECTED = ("/v1/", "/api/")


def key_digests(keys: dict) -> dict[bytes, str]:
    return {hashlib.sha256(k.get().encode()).digest(): tenant for k, tenant in keys.items()}


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


def make_auth_middleware(digests: dict[bytes, str]) -> web.Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(_PROTECTED):
            key = presented_key(request)
            if key is None:
                raise errors.AuthenticationError(
                    "Missing gateway API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                    code="missing_api_key")
            tenant = digests.get(hashlib.sha256(key.encode()).digest())
            if tenant is None:
                raise errors.AuthenticationError("Invalid gateway API key.")
            request[CTX].tenant = tenant
        return await handler(request)

    return auth_middleware
