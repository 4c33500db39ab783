"""GET /v1/models — OpenAI list format: catalog models of configured providers."""

from __future__ import annotations

import orjson
from aiohttp import web

from .. import errors
from ..keys import CATALOG, SETTINGS
from ..settings import PROVIDER_ALIASES


def model_list(request: web.Request) -> bytes:
    return orjson.dumps({"object": "list", "data": _models(request)})


def _models(request: web.Request) -> list[dict]:
    settings = request.app[SETTINGS]
    catalog = request.app[CATALOG]
    data = []
    seen = set()
    for m in catalog.models.values():
        p = settings.providers.get(m.provider)
        if p is None or not p.configured or (m.provider == "mock" and not settings.mock_only):
            continue
        item = {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
        if m.price is not None:
            item["pricing"] = {"input_per_1m": str(m.price.input), "output_per_1m": str(m.price.output),
                               "cached_input_per_1m": str(m.price.cached_input), "currency": "USD",
                               "as_of": m.price.as_of}
        data.append(item)
        seen.add(m.id)
    for name, p in settings.providers.items():
        if not p.configured:
            continue
        for mid in p.models:
            if mid not in seen:
                data.append({"id": f"{name}/{mid}", "object": "model", "created": 0, "owned_by": name})
    return data


async def list_models(request: web.Request) -> web.Response:
    return web.Response(body=model_list(request), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{id} — the openai SDK's ``models.retrieve``."""
    wanted = request.match_info["model"]
    items = _models(request)
    for item in items:
        if item["id"] == wanted:
            return web.Response(body=orjson.dumps(item), content_type="application/json")
    # Another spelling chat completions accept ("openai/gpt-4o-mini", an alias): its entry,
    # under the id asked for, as OpenAI answers.
    entry = request.app[CATALOG].get(wanted.split("/", 1)[1] if "/" in wanted else wanted)
    prefix = wanted.split("/", 1)[0] if "/" in wanted else None
    if entry is not None and (prefix is None or PROVIDER_ALIASES.get(prefix, prefix) == entry.provider):
        for item in items:
            if item["id"] == entry.id:
                return web.Response(body=orjson.dumps({**item, "id": wanted}), content_type="application/json")
    raise errors.ModelNotFound(f"The model '{wanted}' is not served here; GET /v1/models lists what is.",
                               param="model")
