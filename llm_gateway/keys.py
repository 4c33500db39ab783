"""Every ``web.AppKey`` and ``web.RequestKey`` of the app, with concrete types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .context import RequestContext

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .cache import ResponseCache
    from .budget import Budgets
    from .catalog import Catalog
    from .limits import Limiter, Ticket
    from .ledger import Ledger
    from .metrics import Metrics
    from .routing.health import Health
    from .routing.resolve import Resolver
    from .routing.router import Router
    from .settings import Settings
    from .upstream import UpstreamPool

SETTINGS = web.AppKey("settings", "Settings")
#: {"stopping": bool, "requests": set of the tasks serving a request now}: shutdown cuts
#: what is still running when its drain time is over (a 503, or a stream's error event)
LIFECYCLE = web.AppKey("lifecycle", "dict[str, Any]")
CATALOG = web.AppKey("catalog", "Catalog")
ADAPTERS = web.AppKey("adapters", "dict[str, Adapter]")
#: keep-alive connections to the vendors, one pool per process (upstream.py)
UPSTREAM_POOL = web.AppKey("upstream_pool", "UpstreamPool")
RESOLVER = web.AppKey("resolver", "Resolver")
ROUTER = web.AppKey("router", "Router")
HEALTH = web.AppKey("health", "Health")
#: the response cache (aiocache memory/redis, single-flight) and the per-app Prometheus metrics
CACHE = web.AppKey("cache", "ResponseCache")
METRICS = web.AppKey("metrics", "Metrics")
LEDGER = web.AppKey("ledger", "Ledger")
BUDGETS = web.AppKey("budgets", "Budgets")
#: called as ``hook(request, ctx, status)`` by the access log when a request ends
#: (streams included): the spend ledger and budget settlement hang here
REQUEST_END = web.AppKey("request_end", "list[Callable[[web.Request, RequestContext, int], None]]")

#: per-tenant / per-key rate limits (present only when limits are configured)
LIMITER = web.AppKey("limiter", "Limiter")

CTX = web.RequestKey("ctx", RequestContext)
#: the request's rate-limit admission (buckets, reserved tokens, levels for the headers)
RATE_TICKET = web.RequestKey("rate_ticket", "Ticket")
