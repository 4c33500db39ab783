"""Every ``web.AppKey`` and ``web.RequestKey`` of the app, with concrete types."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .context import RequestContext

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .catalog import Catalog
    from .routing.health import Health
    from .routing.resolve import Resolver
    from .routing.router import Router
    from .settings import Settings

SETTINGS = web.AppKey("settings", "Settings")
CATALOG = web.AppKey("catalog", "Catalog")
ADAPTERS = web.AppKey("adapters", "dict[str, Adapter]")
SESSION = web.AppKey("session", aiohttp.ClientSession)
RESOLVER = web.AppKey("resolver", "Resolver")
ROUTER = web.AppKey("router", "Router")
HEALTH = web.AppKey("health", "Health")

CTX = web.RequestKey("ctx", RequestContext)
