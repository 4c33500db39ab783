"""Rate limits per tenant and per gateway key (requests and tokens per minute).

Configured in the TOML config::

    [tenants.acme]
    requests_per_minute = 60
    tokens_per_minute = 100000

    [[keys]]
    sha256 = "..."               # SHA-256 hex of the key
    tenant = "acme"
    name = "ci"
    requests_per_minute = 10     # this key alone, on top of the tenant's limits

Stores: ``memory`` (one process) or ``redis`` (RATE_LIMIT_BACKEND=redis with
REDIS_URL: shared by every worker and replica). See ``limiter.py`` for the algorithm,
the reservation/reconciliation design and the outage policy.

Handlers that parse a request with a prompt call ``await reserve_chat(request, body)``
(or ``reserve_tokens``) once the body is parsed; a no-op when no limit applies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ..keys import CTX, LIMITER, RATE_TICKET
from ..settings import Settings
from ..tokens import request_estimate
from .limiter import Limiter, Limits, Ticket, fmt_duration, limits_configured

__all__ = ["Limiter", "Limits", "Ticket", "fmt_duration", "limits_configured", "reserve_chat",
           "reserve_tokens", "setup_limits"]


def setup_limits(app: web.Application, settings: Settings, clock: Callable[[], float] | None = None) -> None:
    """Install the limiter (when any limit is configured) and its response headers."""
    if not limits_configured(settings):
        return

    async def limiter_ctx(app: web.Application) -> AsyncIterator[None]:
        limiter = Limiter(settings, clock)
        app[LIMITER] = limiter
        yield
        await limiter.close()

    app.cleanup_ctx.append(limiter_ctx)
    app.on_response_prepare.append(_rate_headers)


async def _rate_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    # A signal, not the middleware: streams are prepared inside the handler and error
    # envelopes outside the middleware; both still get the headers.
    ticket = request.get(RATE_TICKET)
    if ticket is not None:
        response.headers.update(ticket.headers())


async def admit_tenant(request: web.Request, tenant: str) -> None:
    """Admission for a route whose body may name its tenant (``/v1/gateway/query``) when
    the gateway runs without keys: the middleware leaves it to the handler, which knows
    the tenant once the body is read (settled by the middleware as usual)."""
    limiter = request.app.get(LIMITER)
    if limiter is None:
        return
    buckets = limiter.buckets(tenant, None)
    if buckets:
        ticket = Ticket(buckets)
        request[RATE_TICKET] = ticket
        await limiter.admit(ticket)


async def reserve_tokens(request: web.Request, prompt_tokens: int | Callable[[], int],
                         output_tokens: int | None = None) -> None:
    """Reserve ``prompt_tokens`` + ``output_tokens`` (None: the configured default).

    ``prompt_tokens`` may be a callable, evaluated only when a tokens limit applies.
    Raises ``errors.RateLimitExceeded`` (429) when the tokens are not available."""
    ticket = request.get(RATE_TICKET)
    if ticket is None or not ticket.token_buckets:
        return
    n = prompt_tokens() if callable(prompt_tokens) else prompt_tokens
    await request.app[LIMITER].reserve(ticket, n, output_tokens)


async def reserve_chat(request: web.Request, body: dict[str, Any]) -> None:
    """Reserve for a canonical chat request: prompt estimate + max tokens × n."""
    ticket = request.get(RATE_TICKET)
    if ticket is None or not ticket.token_buckets:
        return
    out = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body.get("n") or 1
    output = None if not isinstance(out, int) else out * (n if isinstance(n, int) else 1)
    prompt = request_estimate(request.get(CTX), body)
    await request.app[LIMITER].reserve(ticket, prompt, output)
