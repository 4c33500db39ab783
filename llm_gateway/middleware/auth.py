"""Gateway keys (SPEC 3, 10): ``Authorization: Bearer <key>`` or ``x-api-key: <key>``.

Every path under ``/v1/`` and ``/api/`` needs a key once any key is configured;
``/healthz``, ``/metrics``, ``/openapi.json`` and the UI's static files do not.

Keys come from GATEWAY_API_KEYS (``key:tenant`` pairs) and from the config's
``[[keys]]`` tables, which hold only SHA-256 hex digests. Either way the gateway keeps
nothing but digests: ``{sha256(key): KeyEntry}``.

Timing-safe comparison: a presented key is hashed with SHA-256 and its *digest* is
looked up in that dict. Whatever the lookup's timing reveals (hash bucket, how many
leading digest bytes match) concerns the digest, not the key: an attacker cannot
extend a partial match byte by byte without SHA-256 preimages, which is the property
``hmac.compare_digest`` exists to give. A linear ``compare_digest`` scan over every
key would be as safe but costs O(keys) per request, and the plaintext is never held
for a direct comparison anyway (``[[keys]]`` stores digests only).

The tenant comes from the key; ``ctx.key_id`` names the key (its config ``name`` or a
digest prefix) for per-key limits. No key, no Authorization value and no digest is ever
logged or echoed in an error.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .. import errors
from ..config import key_digest
from ..keys import CTX
from ..settings import KeyEntry, Secret, Settings

_PROTECTED = ("/v1/", "/api/")


def key_digests(keys: Mapping[Secret, str]) -> dict[bytes, KeyEntry]:
    """GATEWAY_API_KEYS pairs as digest -> KeyEntry (id: the digest's first 16 hex digits)."""
    out = {}
    for k, tenant in keys.items():
        d = key_digest(k.get())
        out[d] = KeyEntry(tenant, d.hex()[:16])
    return out


def all_key_digests(settings: Settings) -> dict[bytes, KeyEntry]:
    return {**key_digests(settings.gateway_api_keys), **settings.hashed_keys}


def presented_key(request: web.Request) -> str | None:
    """The key from ``Authorization: Bearer`` (preferred) or ``x-api-key``.

    None when neither header is sent; ``AuthenticationError`` when Authorization is
    present but not a usable bearer credential (and no x-api-key is given)."""
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and " " not in token:
            return token
        if not request.headers.get("x-api-key"):
            raise errors.AuthenticationError(
                "Malformed Authorization header: expected 'Authorization: Bearer <gateway key>'.",
                code="invalid_authorization_header")
    key = request.headers.get("x-api-key")
    if key is None:
        return None
    return key.strip() or None


def make_auth_middleware(digests: dict[bytes, KeyEntry]) -> web.Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        if request.path.startswith(_PROTECTED):
            key = presented_key(request)
            if key is None:
                raise errors.AuthenticationError(
                    "Missing gateway API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                    code="missing_api_key")
            entry = digests.get(key_digest(key))
            if entry is None:
                raise errors.AuthenticationError("Invalid gateway API key.", code="invalid_api_key")
            ctx = request[CTX]
            ctx.tenant = entry.tenant
            ctx.key_id = entry.id
        return await handler(request)

    return auth_middleware

