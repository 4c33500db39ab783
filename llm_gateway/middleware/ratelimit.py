"""Per-tenant / per-key rate limits (inside auth: the tenant and key are known).

Admits each request of a limited route before its body is read (one atomic store
step), keeps the ticket on the request for the handler's token reservation and the
x-ratelimit-* headers, and reconciles reserved tokens with the actual usage when the
handler has finished (streams included: the chat handler returns after the last
byte). See ``llm_gateway/limits/limiter.py`` for the design.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..budget import tenant_of
from ..keys import CTX, LIMITER, RATE_TICKET, SETTINGS
from ..limits import Ticket

#: the routes that spend upstream tokens; everything else is not rate-limited
LIMITED = frozenset({
    ("POST", "/v1/chat/completions"),
    ("POST", "/api/query"),
    ("POST", "/v1/gateway/query"),
})


#: routes whose body may name the tenant (honoured only without gateway keys)
BODY_TENANT = frozenset({"/v1/gateway/query", "/v1/chat/completions"})


def _actual_tokens(request: web.Request) -> int:
    ctx = request[CTX]
    if ctx.cache == "HIT" or not ctx.usage:
        return 0  # a cache hit or a request that never got an answer costs no upstream tokens
    try:
        return int(ctx.usage.get("total_tokens") or 0)
    except (TypeError, ValueError):
        return 0


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if (request.method, request.path) not in LIMITED:
        return await handler(request)
    limiter = request.app[LIMITER]
    ctx = request[CTX]
    # Without gateway keys the tenant is "default" (what the ledger and budgets call it),
    # or, on the routes whose body may name one, that tenant: the handler admits it then
    # (``limits.admit_tenant``) once the body is read.
    deferred = request.path in BODY_TENANT and not request.app[SETTINGS].auth_enabled
    buckets = None if deferred else limiter.buckets(tenant_of(ctx), ctx.key_id)
    if buckets:
        ticket = Ticket(buckets)
        request[RATE_TICKET] = ticket  # before admit: a refusal carries the headers too
        await limiter.admit(ticket)
    try:
        return await handler(request)
    finally:
        ticket = request.get(RATE_TICKET)
        if ticket is not None and (ticket.taken or ticket.token_buckets):
            # shielded: a client that disconnects cancels the handler, not the refund
            await asyncio.shield(limiter.settle(ticket, _actual_tokens(request)))
