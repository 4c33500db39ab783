"""create_app(settings): app keys, the shared upstream session, middlewares, routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .adapters import build_adapters
from .cache import ResponseCache
from .catalog import load_catalog
from .handlers.chat import chat_completions
from .handlers.health import healthz
from .handlers.metrics import metrics as metrics_handler
from .handlers.models import get_model, list_models
from .handlers.openapi import openapi_json
from .handlers.gateway import add_routes as add_gateway_routes
from .handlers.status import api_status
from .ledger import install as install_ledger
from .keys import ADAPTERS, CACHE, CATALOG, HEALTH, LIFECYCLE, METRICS, RESOLVER, ROUTER, SETTINGS, UPSTREAM_POOL
from .metrics import Metrics
from .budget import Budgets
from .limits import limits_configured, setup_limits
from .middleware import build_middlewares
from .middleware.cors import setup_cors
from .routing.health import Health
from .routing.resolve import Resolver
from .routing.retry import RetryPolicy
from .routing.router import Router
from .settings import Settings
from .tokens import warm_up
from .upstream import HttpTransport, make_pool

UI_DIR = Path(__file__).parent / "ui"


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    return serve


def create_app(
    settings: Settings,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rand: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
) -> web.Application:
    """Build the app. ``sleep``/``rand``/``clock`` are injectable for deterministic tests."""
    # handler_args: explicit header limits (aiohttp's parser answers 400 beyond them)
    app = web.Application(middlewares=build_middlewares(settings), client_max_size=settings.max_request_bytes,
                          handler_args={"max_line_size": settings.max_header_bytes,
                                        "max_field_size": settings.max_header_bytes, "max_headers": 128})
    setup_limits(app, settings, clock)  # x-ratelimit-* headers, the limiter and its store
    setup_cors(app, settings)  # CORS headers on actual responses (streams and errors included)
    catalog = load_catalog(settings.config)
    adapters = build_adapters(settings)
    health = Health(clock) if clock else Health()
    app[SETTINGS] = settings
    lifecycle = app[LIFECYCLE] = {"stopping": False, "requests": set()}

    async def stopping(_: web.Application) -> None:
        # No new connections from here; requests in flight get SHUTDOWN_TIMEOUT to finish.
        # What is still running then is cancelled while its connection is open, so each
        # client hears why (a 503 envelope, or a stream's SSE error event) before aiohttp
        # closes the transports.
        lifecycle["stopping"] = True

        def cut() -> None:
            for task in list(lifecycle["requests"]):
                task.cancel()

        asyncio.get_running_loop().call_later(settings.shutdown_timeout, cut)

    app.on_shutdown.append(stopping)
    app[CATALOG] = catalog
    app[ADAPTERS] = adapters
    app[HEALTH] = health
    metrics = app[METRICS] = Metrics()  # a registry per app (tests run several apps)
    health.on_cooldown = metrics.cooldown
    metrics.know(settings.providers, catalog.models)
    # The cache's clock is wall time (entries in Redis are shared across processes);
    # tests inject theirs to move time instead of sleeping.
    cache = app[CACHE] = ResponseCache(settings, clock or time.time, metrics)
    app[RESOLVER] = Resolver(settings, catalog, adapters, lambda t: health.available(t.key))
    if settings.mock_only or limits_configured(settings) or Budgets.from_config(settings.config).limits:
        warm_up()  # every request will be estimated: load the BPE ranks now, not on the first one
    # else the ranks (~130 MB) load on first use: only answers without vendor usage need them

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = app[UPSTREAM_POOL] = make_pool(settings)
        policy = RetryPolicy(settings, rand) if rand else RetryPolicy(settings)
        kw = {}
        if sleep:
            kw["sleep"] = sleep
        if clock:
            kw["clock"] = clock
        app[ROUTER] = Router(settings, HttpTransport(pool), health, policy, **kw)
        yield
        await pool.close()

    app.cleanup_ctx.append(upstream_ctx)

    async def observe_ctx(app: web.Application) -> AsyncIterator[None]:
        app[ROUTER].observer = metrics  # after upstream_ctx: the router exists now
        yield
        await cache.close()

    app.cleanup_ctx.append(observe_ctx)
    install_ledger(app, settings)  # budgets + spend ledger: request-end hooks, start/flush/stop
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/status", api_status)
    add_gateway_routes(app)  # /api/query, /v1/gateway/{query,cost-estimate,usage,requests}
    if UI_DIR.is_dir() and (UI_DIR / "index.html").is_file():
        index = UI_DIR / "index.html"

        async def ui_index(request: web.Request) -> web.FileResponse:
            return web.FileResponse(index)

        app.router.add_get("/", ui_index)
        app.router.add_get("/ui", ui_index)
        app.router.add_get("/ui/", ui_index)
        # One route per file, known at start-up, rather than aiohttp's static route: that
        # one answers a folder with a 403 and a missing file with an empty 404 (no envelope).
        for f in sorted(UI_DIR.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                app.router.add_get(f"/ui/{f.name}", _file_handler(f))
    return app
