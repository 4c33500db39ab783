"""create_app(settings): app keys, the shared upstream session, middlewares, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .adapters import build_adapters
from .catalog import load_catalog
from .handlers.chat import chat_completions
from .handlers.health import healthz
from .handlers.models import list_models
from .keys import ADAPTERS, CATALOG, HEALTH, RESOLVER, ROUTER, SESSION, SETTINGS
from .middleware import build_middlewares
from .routing.health import Health
from .routing.resolve import Resolver
from .routing.retry import RetryPolicy
from .routing.router import Router
from .settings import Settings
from .tokens import warm_up
from .upstream import HttpTransport, make_session

UI_DIR = Path(__file__).parent / "ui"


def create_app(
    settings: Settings,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rand: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
) -> web.Application:
    """Build the app. ``sleep``/``rand``/``clock`` are injectable for deterministic tests."""
    app = web.Application(middlewares=build_middlewares(settings), client_max_size=settings.max_request_bytes)
    catalog = load_catalog(settings.config)
    adapters = build_adapters(settings)
    health = Health(clock) if clock else Health()
    app[SETTINGS] = settings
    app[CATALOG] = catalog
    app[ADAPTERS] = adapters
    app[HEALTH] = health
    app[RESOLVER] = Resolver(settings, catalog, adapters, lambda t: health.available(t.key))
    warm_up()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        session = make_session(settings)
        app[SESSION] = session
        policy = RetryPolicy(settings, rand) if rand else RetryPolicy(settings)
        kw = {}
        if sleep:
            kw["sleep"] = sleep
        if clock:
            kw["clock"] = clock
        app[ROUTER] = Router(settings, HttpTransport(session), health, policy, **kw)
        yield
        await session.close()

    app.cleanup_ctx.append(upstream_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    if UI_DIR.is_dir() and (UI_DIR / "index.html").is_file():
        index = UI_DIR / "index.html"

        async def ui_index(request: web.Request) -> web.FileResponse:
            return web.FileResponse(index)

        app.router.add_get("/", ui_index)
        app.router.add_static("/ui/", UI_DIR)
    return app
