"""The gateway-native API (SPEC 5): /api/query, /v1/gateway/query, /v1/gateway/cost-estimate,
/v1/gateway/usage and /v1/gateway/requests.

A query becomes the canonical request ``{"model", "messages": [{"role": "user",
"content": query}]}`` and goes through exactly what /v1/chat/completions uses: the
resolver, the response cache, the router and ``usage.settle_usage``. Money in these
answers is a JSON number of US dollars, like ``usage.cost``; the exact decimal is in the
``X-Gateway-Cost-USD`` header and the ledger. ``null`` means unknown (an unpriced model).

``model_version`` (a specific or dated version of ``model``) resolves as follows:
1. ``<model>-<version>`` when the catalog knows it (id or alias, with or without a
   ``provider/`` prefix): ``claude-3-5-haiku`` + ``20241022`` → ``claude-3-5-haiku-20241022``;
2. else, when ``model`` is a bare provider name, the version is the full model id on that
   provider: ``anthropic`` + ``claude-3-opus-20240229``;
3. else, when the version already starts with the model's name, it is the full id on the
   model's provider: ``gpt-4o`` + ``gpt-4o-2024-11-20``;
4. else ``<model>-<version>`` is forwarded to the model's provider as an id outside the
   catalog (SPEC 4), hence unpriced: ``gpt-4o`` + ``2024-11-20`` → ``openai/gpt-4o-2024-11-20``.
The vendor receives the version id itself, and a pinned version has no fallback chain.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from aiohttp import web

from .. import errors
from ..budget import admit, worst_case
from ..cache import ResponseCache
from ..catalog import TASK_TYPES
from ..context import RequestContext
from ..cost import MILLION, fmt_usd, output_cap, token_buckets, usd_number
from ..keys import CACHE, CATALOG, CTX, RESOLVER, ROUTER
from ..limits import reserve_chat
from ..logging import request_id_var
from ..middleware.request_id import usable_request_id
from ..routing.resolve import Target
from ..settings import PROVIDER_ALIASES
from ..tokens import estimate_prompt_tokens
from ..validation import parse_json
from ..usage import settle_usage
from .chat import answer_text, gateway_headers, log_answer, log_request, log_route, take_tenant
from .usage import recent_requests, usage

_Q10 = Decimal("0.0000000001")
MAX_QUERY_CHARS = 2_000_000  # MAX_REQUEST_BYTES bounds it first; this guards the tokenizer

_API_QUERY_FIELDS = frozenset({"query", "model", "task_type", "request_id"})
_GATEWAY_QUERY_FIELDS = frozenset({"query", "model", "model_version", "task_type", "max_cost_usd", "dry_run",
                                   "tenant", "request_id", "max_tokens"})
_ESTIMATE_FIELDS = frozenset({"query", "model", "model_version", "expected_response_tokens"})


# ------------------------------------------------------------------ body parsing
def _object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.", code="invalid_type")
    for k in body:
        if k not in allowed:
            raise errors.BadRequest(f"Unknown field '{k}'; this endpoint accepts {', '.join(sorted(allowed))}.",
                                    param=k, code="unknown_parameter")
    return body


def _str(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    v = body.get(name)
    if v is None:
        if required:
            raise errors.BadRequest(f"Missing required parameter: '{name}'.", param=name,
                                    code="missing_required_parameter")
        return None
    if not isinstance(v, str) or not v.strip():
        raise errors.BadRequest(f"'{name}' must be a non-empty string.", param=name, code="invalid_type")
    if not v.isprintable():  # names end up in headers, log lines and ledger rows
        raise errors.BadRequest(f"'{name}' must be printable text (no control characters).", param=name,
                                code="invalid_value")
    return v


def _query(body: dict[str, Any]) -> str:
    q = _str(body, "query", required=True)
    assert q is not None
    if len(q) > MAX_QUERY_CHARS:
        raise errors.BadRequest(f"'query' is longer than {MAX_QUERY_CHARS} characters.", param="query",
                                code="invalid_value")
    return q


def _int(body: dict[str, Any], name: str, lo: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise errors.BadRequest(f"'{name}' must be an integer of at least {lo}.", param=name, code="invalid_value")
    return v


def _bool(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise errors.BadRequest(f"'{name}' must be true or false.", param=name, code="invalid_type")
    return v


def _usd(body: dict[str, Any], name: str) -> Decimal | None:
    """A USD amount given as a number or a decimal string (``0.01`` or ``"0.01"``)."""
    v = body.get(name)
    if v is None:
        return None
    try:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise InvalidOperation
        d = Decimal(str(v).strip())
        ok = d.is_finite() and d >= 0
    except InvalidOperation:
        ok = False
    if not ok:
        raise errors.BadRequest(f"'{name}' must be a non-negative amount in USD, such as 0.01.", param=name,
                                code="invalid_value")
    return d


def _request_id(ctx: RequestContext, body: dict[str, Any]) -> None:
    """A body ``request_id`` becomes the request id (logs, answers, X-Request-ID)."""
    rid = body.get("request_id")
    if rid is None:
        return
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not usable_request_id(rid):
        raise errors.BadRequest("'request_id' must be printable ASCII of at most 128 characters.",
                                param="request_id", code="invalid_value")
    ctx.request_id = rid
    request_id_var.set(rid)  # the request-id middleware resets it when the request ends


# ------------------------------------------------------------------ models
def versioned_target(request: web.Request, model: str, version: str) -> Target:
    """The target for ``model`` + ``model_version`` (rules in the module docstring).

    The version id itself is what the vendor receives (a pinned version is never swapped
    for the catalog's main id); the catalog entry it is listed under gives its price."""
    if model.strip().lower() == "auto":
        raise errors.BadRequest("'model_version' needs a named model, not 'auto'.", param="model_version",
                                code="invalid_value")
    v = version.strip()
    if len(v) > 128 or not v.isprintable() or " " in v:
        raise errors.BadRequest("'model_version' must be a version id without spaces.", param="model_version",
                                code="invalid_value")
    resolver, catalog = request.app[RESOLVER], request.app[CATALOG]
    adapters = resolver.adapters
    m = model.strip()
    head, sep, rest = m.partition("/")
    prov = PROVIDER_ALIASES.get(head.lower(), head.lower()) if sep else None
    bare = rest if sep and prov in adapters else m
    entry = catalog.get(f"{bare}-{v}")
    if entry is not None and entry.provider in adapters and (prov is None or entry.provider == prov):
        return Target(entry.provider, f"{bare}-{v}", adapters[entry.provider], entry)
    alias = PROVIDER_ALIASES.get(m.lower(), m.lower())
    if not sep and alias in adapters:
        return Target(alias, v, adapters[alias], catalog.find(alias, v))
    base = resolver.one(m)  # ModelNotFound names the model
    if v.startswith((bare + "-", base.model + "-")):
        return Target(base.provider, v, base.adapter, catalog.find(base.provider, v))
    vid = f"{bare}-{v}"
    return Target(base.provider, vid, base.adapter, catalog.find(base.provider, vid))


def _targets(request: web.Request, model: str, version: str | None, task_type: str | None) -> list[Target]:
    resolver = request.app[RESOLVER]
    if version is None:
        return resolver.targets(model, task_type, None)
    if task_type is not None and task_type not in TASK_TYPES:
        raise errors.BadRequest(f"task_type must be one of {', '.join(TASK_TYPES)}", param="task_type")
    t = versioned_target(request, model, version)
    if not resolver.configured(t.provider):
        raise errors.BadRequest(f"provider '{t.provider}' is not configured (set its API key)", param="model",
                                code="provider_not_configured")
    return [t]


def _canonical(model: str, query: str, max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": query}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


# ------------------------------------------------------------------ answering
async def _answer(request: web.Request, ctx: RequestContext, body: dict[str, Any],
                  targets: list[Target]) -> dict[str, Any]:
    """The cache entry ``{response, provider, model, estimated}`` for ``body``: from the
    response cache, else from the router (budget admitted first, usage settled once)."""
    app = request.app

    async def produce() -> dict[str, Any]:
        await reserve_chat(request, body)  # tokens per minute (limits/)
        admit(request, ctx, body, targets)  # the tenant's USD budget
        resp, t = await app[ROUTER].complete(ctx, body, targets)
        resp["usage"] = settle_usage(ctx, t, body, resp.get("usage"), answer_text(resp))
        return ResponseCache.entry(resp, t.provider, t.model, ctx.estimated)

    cache = app.get(CACHE)
    key = cache.key_for(ctx, None, targets[0].provider, targets[0].model, body) if cache is not None else None
    if key is None:
        entry = await produce()
    else:
        entry, _ = await cache.get_or_run(ctx, key, produce)
    log_answer(ctx, answer_text(entry["response"]))
    return entry


def _token_usage(ctx: RequestContext, usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": int(usage.get("total_tokens") or prompt + completion), "estimated": ctx.estimated,
            "buckets": token_buckets(usage)}


def _query_fields(ctx: RequestContext, entry: dict[str, Any]) -> dict[str, Any]:
    resp = entry["response"]
    usage = resp.get("usage") or ctx.usage or {}
    choices = resp.get("choices") or [{}]
    tu = _token_usage(ctx, usage)
    return {"response": answer_text(resp), "provider": entry.get("provider"), "model": entry.get("model"),
            "request_id": ctx.request_id, "cached": ctx.cache == "HIT",
            "response_time_ms": round(ctx.elapsed_ms(), 3), "num_tokens": tu["total_tokens"],
            "finish_reason": choices[0].get("finish_reason") if isinstance(choices[0], dict) else None,
            "token_usage": tu}


def _metrics(ctx: RequestContext) -> dict[str, Any]:
    return {"latency_ms": round(ctx.elapsed_ms(), 3), "attempts": ctx.attempts, "fallback_used": ctx.fallback_used,
            "cache": ctx.cache, "overhead_ms": round(ctx.overhead_ms(), 3)}


def _usd_num(v: Decimal | None) -> float | None:
    return usd_number(v)


def _json(data: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json", headers=headers)


# ------------------------------------------------------------------ POST /api/query
async def api_query(request: web.Request) -> web.Response:
    ctx = request[CTX]
    b = _object(await request.read(), _API_QUERY_FIELDS)
    _request_id(ctx, b)
    query = _query(b)
    model = _str(b, "model") or "auto"
    ctx.model_asked, ctx.task_type = model, _str(b, "task_type")
    log_request(request, ctx, query)
    ctx.endpoint = "/api/query"  # from here on the request is recorded in the spend ledger
    targets = request.app[RESOLVER].targets(model, ctx.task_type, None)
    log_route(request.app[RESOLVER], ctx, model, ctx.task_type, targets)
    entry = await _answer(request, ctx, _canonical(model, query), targets)
    return _json(_query_fields(ctx, entry), gateway_headers(ctx, None, with_cost=True))


# ------------------------------------------------------------------ POST /v1/gateway/query
async def gateway_query(request: web.Request) -> web.Response:
    ctx = request[CTX]
    b = _object(await request.read(), _GATEWAY_QUERY_FIELDS)
    _request_id(ctx, b)
    query = _query(b)
    model = _str(b, "model", required=True)
    assert model is not None
    version = _str(b, "model_version")
    ctx.task_type = _str(b, "task_type")
    max_cost = _usd(b, "max_cost_usd")
    dry_run = _bool(b, "dry_run")
    max_tokens = _int(b, "max_tokens", 1)
    await take_tenant(request, ctx, _str(b, "tenant"))
    ctx.model_asked = model
    log_request(request, ctx, query)
    if not dry_run:  # a dry run spends nothing and leaves no ledger row
        ctx.endpoint = "/v1/gateway/query"
    unconfigured: errors.GatewayError | None = None
    try:
        targets = _targets(request, model, version, ctx.task_type)
    except errors.BadRequest as e:
        # The estimate needs the catalog, not the vendor: a dry run, and the max_cost_usd
        # refusal, answer for a model whose provider has no key; a real call cannot.
        if e.code != "provider_not_configured" or (not dry_run and max_cost is None) or \
                model.strip().lower() == "auto":
            raise
        unconfigured = e
        targets = [versioned_target(request, model, version) if version else request.app[RESOLVER].one(model)]
    log_route(request.app[RESOLVER], ctx, model, ctx.task_type, targets)
    body = _canonical(targets[0].key if version else model, query, max_tokens)
    est = worst_case(body, targets)
    if max_cost is not None:
        if est.unpriced:
            names = ", ".join(t.key for t in est.unpriced)
            raise errors.BadRequest(
                f"max_cost_usd cannot be checked: {names} has no price in the catalog. Give it one in the "
                "config ([[models]] with input_per_1m/output_per_1m), or leave out max_cost_usd.",
                param="max_cost_usd", code="unpriced_model")
        if est.usd is not None and est.usd > max_cost:
            raise errors.CostLimitExceeded(
                f"The worst-case cost ${fmt_usd(est.usd)} of this request on {est.target.key} exceeds "
                f"max_cost_usd ${fmt_usd(max_cost)} ({est.input_tokens} input tokens + up to {est.output_cap} "
                f"output tokens, the cap from {est.output_cap_basis}). Lower max_tokens, shorten the query or "
                "choose a cheaper model.", param="max_cost_usd")
    cost: dict[str, Any] = {"estimated_usd": _usd_num(est.usd), "actual_usd": None, "currency": "USD",
                            "priced": not est.unpriced, "estimated_input_tokens": est.input_tokens,
                            "max_output_tokens": est.output_cap, "max_output_tokens_basis": est.output_cap_basis}
    if dry_run:
        t = est.target
        out = {"response": None, "provider": t.provider, "model": t.model, "request_id": ctx.request_id,
               "cached": False, "response_time_ms": round(ctx.elapsed_ms(), 3), "num_tokens": est.input_tokens,
               "finish_reason": None,
               "token_usage": {"input_tokens": est.input_tokens, "output_tokens": 0,
                               "total_tokens": est.input_tokens, "estimated": True},
               "dry_run": True, "cost": cost, "metrics": _metrics(ctx)}
        return _json(out)
    if unconfigured is not None:
        raise unconfigured
    entry = await _answer(request, ctx, body, targets)
    cost["actual_usd"] = _usd_num(ctx.cost) if ctx.priced else None
    cost["priced"] = ctx.priced
    out = {**_query_fields(ctx, entry), "dry_run": False, "cost": cost, "metrics": _metrics(ctx)}
    return _json(out, gateway_headers(ctx, None, with_cost=True))


# ------------------------------------------------------------------ POST /v1/gateway/cost-estimate
def _q10(v: Decimal) -> Decimal:
    return v.quantize(_Q10)


async def cost_estimate(request: web.Request) -> web.Response:
    """Tokens and cost of a query on a model, without calling it (configured or not).

    ``expected_response_tokens`` absent: the worst case (the model's max_output_tokens,
    else cost.DEFAULT_OUTPUT_CAP). An unpriced model answers 200 with ``priced: false``
    and null prices and costs (the token counts still hold)."""
    b = _object(await request.read(), _ESTIMATE_FIELDS)
    query = _query(b)
    model = _str(b, "model", required=True)
    assert model is not None
    version = _str(b, "model_version")
    expected = _int(b, "expected_response_tokens", 0)
    resolver = request.app[RESOLVER]
    if version is not None:
        t = versioned_target(request, model, version)
    elif model.strip().lower() == "auto":
        t = resolver.targets("auto", None, None)[0]
    else:
        t = resolver.one(model)
    input_tokens = estimate_prompt_tokens([{"role": "user", "content": query}])
    if expected is not None:
        out_tokens, basis = expected, "expected_response_tokens"
    else:
        out_tokens, basis = output_cap({}, t.entry.max_output_tokens if t.entry else None)
    price = t.entry.price if t.entry is not None else None
    out: dict[str, Any] = {"object": "gateway.cost_estimate", "model": t.model, "provider": t.provider,
                           "input_tokens": input_tokens, "expected_output_tokens": out_tokens,
                           "expected_output_tokens_basis": basis, "currency": "USD", "priced": price is not None}
    if price is None:
        out.update(input_per_1m=None, output_per_1m=None, cached_input_per_1m=None, prices_as_of=None,
                   price_source=None, input_cost_usd=None, output_cost_usd=None, total_cost_usd=None,
                   message=f"{t.key} has no price in the catalog; its cost cannot be estimated. Add one in the "
                           "config ([[models]] with input_per_1m and output_per_1m).")
        return _json(out)
    inp = _q10(input_tokens * price.input / MILLION)
    outc = _q10(out_tokens * price.output / MILLION)
    out.update(input_per_1m=_usd_num(price.input), output_per_1m=_usd_num(price.output),
               cached_input_per_1m=_usd_num(price.cached_input), prices_as_of=price.as_of,
               price_source=price.source, input_cost_usd=_usd_num(inp), output_cost_usd=_usd_num(outc),
               total_cost_usd=_usd_num(inp + outc))
    return _json(out)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/query", api_query)
    app.router.add_post("/v1/gateway/query", gateway_query)
    app.router.add_post("/v1/gateway/cost-estimate", cost_estimate)
    app.router.add_get("/v1/gateway/usage", usage)
    app.router.add_get("/v1/gateway/requests", recent_requests)
