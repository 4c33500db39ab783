"""GET /openapi.json — an OpenAPI 3.1 description of the gateway's own endpoints (SPEC 5).

Hand-written (the handlers parse with orjson, not a schema library), serialised once
at import. Request schemas state what ``validation.py`` and the native handlers
accept; every error is the OpenAI envelope. The fuzz test
(tests/integration/test_openapi_fuzz.py) drives schemathesis from this document.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-gateway")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


VERSION = _version()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
            "content": _json(_ref("ErrorEnvelope"))}


_RATE_HEADERS = {
    f"x-ratelimit-{what}-{kind}": {"$ref": f"#/components/headers/x-ratelimit-{what}-{kind}"}
    for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")
}
_GATEWAY_HEADERS = {
    name: {"description": desc, "schema": {"type": "string"}}
    for name, desc in (
        ("X-Gateway-Provider", "canonical provider that answered"),
        ("X-Gateway-Model", "the model that answered"),
        ("X-Gateway-Cache", "HIT, MISS or BYPASS"),
        ("X-Gateway-Attempts", "upstream tries, retries and fallbacks included"),
        ("X-Gateway-Cost-USD", "this request's cost (decimal string; not on streams)"),
        ("X-Gateway-Overhead-Ms", "time spent in the gateway itself"),
    )
}


def _responses(ok: dict[str, Any], *codes: int, limited: bool = False, authed: bool = True) -> dict[str, Any]:
    ok = dict(ok)
    ok.setdefault("headers", {})
    ok["headers"] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}, **ok["headers"]}
    if limited:
        ok["headers"].update(_RATE_HEADERS)
    out: dict[str, Any] = {"200": ok}
    names = {400: "BadRequest", 401: "Unauthorized", 402: "CostLimitExceeded", 403: "Forbidden",
             404: "NotFound", 408: "RequestTimeout", 413: "PayloadTooLarge", 429: "RateLimited",
             502: "UpstreamError", 503: "Unavailable", 504: "UpstreamTimeout"}
    wanted = set(codes) | ({401} if authed else set()) | ({429} if limited else set())
    for c in sorted(wanted):
        out[str(c)] = {"$ref": f"#/components/responses/{names[c]}"}
    return out


def _op(summary: str, op_id: str, responses: dict[str, Any], *, body: str | None = None,
        params: list[dict[str, Any]] | None = None, authed: bool = True, tags: list[str]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": op_id, "tags": tags, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if params:
        op["parameters"] = params
    op["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}] if authed else []
    return op


_S = {"type": "string"}
_INT0 = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_TASK = {"type": "string", "enum": ["text_generation", "summarization", "sentiment_analysis",
                                    "question_answering"]}
_TOKENS = {"type": "object", "description": "disjoint buckets summing to total: input excludes cached input, "
                                            "output excludes reasoning",
           "properties": {k: _INT0 for k in ("input", "cached_input", "output", "reasoning", "total")}}
_USAGE_OUT = {
    "type": "object",
    "properties": {"input_tokens": _INT0, "output_tokens": _INT0, "total_tokens": _INT0,
                   "estimated": {"type": "boolean"}, "buckets": _TOKENS},
}
_USD = {"type": ["number", "null"], "minimum": 0,
        "description": "US dollars (the exact decimal is in X-Gateway-Cost-USD and the ledger); null: unpriced"}

SCHEMAS: dict[str, Any] = {
    "ErrorEnvelope": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code", "request_id"],
            "properties": {"message": _S, "type": _S, "param": {"type": ["string", "null"]},
                           "code": {"type": ["string", "null"]}, "request_id": {"type": ["string", "null"]},
                           "attempts": {"type": "array", "items": {"type": "object"}}},
        }},
    },
    "ContentPart": {
        "type": "object", "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["text", "image_url", "input_audio", "file"]},
                       "text": _S, "image_url": {"type": "object", "properties": {"url": _S, "detail": _S}}},
    },
    "ChatMessage": {
        "type": "object", "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
            "content": {"oneOf": [_S, {"type": "array", "items": _ref("ContentPart")}, {"type": "null"}]},
            "name": _S, "tool_call_id": _S,
            "tool_calls": {"type": "array", "items": {"type": "object", "required": ["id", "type", "function"],
                                                      "properties": {"id": _S, "type": {"const": "function"},
                                                                     "function": {"type": "object"}}}},
        },
    },
    "Tool": {
        "type": "object", "required": ["type", "function"],
        "properties": {"type": {"const": "function"}, "function": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "description": _S,
                           "parameters": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}},
    },
    "ChatCompletionRequest": {
        "type": "object", "required": ["model", "messages"],
        "description": "The OpenAI chat-completions request; fallbacks, task_type and cache are gateway "
                       "extensions (extra_body), removed before forwarding.",
        "properties": {
            "model": {"type": "string", "minLength": 1, "examples": ["mock", "auto", "gpt-4o-mini"]},
            "messages": {"type": "array", "minItems": 1, "maxItems": 2048, "items": _ref("ChatMessage")},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
            "seed": {"type": ["integer", "null"]},
            "stop": {"oneOf": [_S, {"type": "array", "items": _S, "maxItems": 4}, {"type": "null"}]},
            "user": _S,
            "tools": {"type": "array", "maxItems": 128, "items": _ref("Tool")},
            "tool_choice": {"oneOf": [{"type": "string", "enum": ["none", "auto", "required"]},
                                      {"type": "object", "required": ["type", "function"]}]},
            "parallel_tool_calls": {"type": "boolean"},
            "response_format": {"type": "object", "required": ["type"], "properties": {
                "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                "json_schema": {"type": "object", "required": ["name"]}}},
            "logprobs": {"type": ["boolean", "null"]},
            "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
            "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
            "fallbacks": {"type": "array", "items": _S},
            "task_type": _TASK,
            "cache": {"type": "boolean"},
            "tenant": {"type": "string", "description": "honoured only without gateway keys; with keys it must "
                                                          "be the key's own tenant (403 otherwise)"},
        },
    },
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "model", "choices"],
        "properties": {"id": _S, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
                       "model": _S, "choices": {"type": "array", "items": {"type": "object"}},
                       "usage": {"type": "object", "properties": {
                           "prompt_tokens": _INT0, "completion_tokens": _INT0, "total_tokens": _INT0,
                           "cost": {"type": "number", "description": "USD"}}}},
    },
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "owned_by"],
            "properties": {"id": _S, "object": {"const": "model"}, "created": {"type": "integer"},
                           "owned_by": _S, "pricing": {"type": "object"}}}}},
    },
    "QueryRequest": {
        "type": "object", "required": ["query"],
        "properties": {"query": {"type": "string", "minLength": 1}, "model": _S, "task_type": _TASK,
                       "request_id": _S},
    },
    "QueryResponse": {
        "type": "object",
        "properties": {"response": {"type": ["string", "null"], "description": "null for a dry run"},
                       "provider": _S, "model": _S, "request_id": _S,
                       "cached": {"type": "boolean"}, "response_time_ms": _NUM, "num_tokens": _INT0,
                       "finish_reason": {"type": ["string", "null"]}, "token_usage": _USAGE_OUT},
    },
    "GatewayQueryRequest": {
        "type": "object", "required": ["query", "model"],
        "properties": {"query": {"type": "string", "minLength": 1}, "model": {"type": "string", "minLength": 1},
                       "model_version": _S, "task_type": _TASK,
                       "max_cost_usd": {"oneOf": [{"type": "number", "minimum": 0},
                                                  {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}]},
                       "max_tokens": {"type": "integer", "minimum": 1,
                                      "description": "extension: caps the answer (and the worst-case estimate)"},
                       "dry_run": {"type": "boolean"},
                       "tenant": {"type": "string", "description": "honoured only without gateway keys; "
                                  "with keys, naming another tenant than the key's is refused (403)"},
                       "request_id": _S},
    },
    "GatewayQueryResponse": {
        "allOf": [_ref("QueryResponse"), {"type": "object", "properties": {
            "dry_run": {"type": "boolean"},
            "cost": {"type": "object", "properties": {
                "estimated_usd": _USD, "actual_usd": _USD, "currency": {"const": "USD"}, "priced": {"type": "boolean"},
                "estimated_input_tokens": _INT0, "max_output_tokens": _INT0, "max_output_tokens_basis": _S}},
            "metrics": {"type": "object", "properties": {"latency_ms": _NUM, "attempts": _INT0,
                                                         "fallback_used": {"type": "boolean"}, "cache": _S,
                                                         "overhead_ms": _NUM}}}}],
    },
    "CostEstimateRequest": {
        "type": "object", "required": ["query", "model"],
        "properties": {"query": _S, "model": {"type": "string", "minLength": 1}, "model_version": _S,
                       "expected_response_tokens": _INT0},
    },
    "CostEstimate": {
        "type": "object",
        "properties": {"object": {"const": "gateway.cost_estimate"}, "model": _S, "provider": _S,
                       "input_tokens": _INT0, "expected_output_tokens": _INT0, "expected_output_tokens_basis": _S,
                       "priced": {"type": "boolean"}, "input_per_1m": _USD, "output_per_1m": _USD,
                       "cached_input_per_1m": _USD, "prices_as_of": {"type": ["string", "null"]},
                       "price_source": {"type": ["string", "null"]}, "input_cost_usd": _USD,
                       "output_cost_usd": _USD, "total_cost_usd": _USD, "currency": {"const": "USD"},
                       "message": _S},
    },
    "Usage": {"type": "object", "description": "spend, tokens and request counts from the ledger, grouped",
              "properties": {"object": {"const": "gateway.usage"}, "from": {"type": ["string", "null"]},
                             "to": {"type": ["string", "null"]}, "tenant": {"type": ["string", "null"]},
                             "group_by": {"type": "array", "items": _S}, "currency": {"const": "USD"},
                             "totals": _ref("UsageGroup"), "groups": {"type": "array", "items": _ref("UsageGroup")}}},
    "UsageGroup": {"type": "object", "properties": {
        "tenant": _S, "provider": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]}, "day": _S,
        "month": _S, "requests": _INT0, "errors": _INT0, "cache_hits": _INT0, "unpriced_requests": _INT0,
        "spend_usd": _USD, "tokens": _TOKENS}},
    "RecentRequests": {
        "type": "object", "description": "the most recent requests, newest first; never prompt or answer text",
        "properties": {"data": {"type": "array", "items": {"type": "object", "properties": {
            "request_id": _S, "time": _S, "tenant": _S, "endpoint": _S, "provider": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]}, "status": {"type": "integer"},
            "error_type": {"type": ["string", "null"]}, "latency_ms": _NUM, "attempts": _INT0, "cache": _S,
            "fallback_used": {"type": "boolean"}, "estimated": {"type": "boolean"}, "tokens": _TOKENS,
            "cost_usd": _USD}}}},
    },
    "Status": {"type": "object", "description": "per provider: configured, available, circuit state, last "
                                                "error, recent latency and error counts (never a key)"},
}

RESPONSES = {
    name: _err(desc) for name, desc in (
        ("BadRequest", "invalid JSON, a missing field, or a field of the wrong type or range (param names it)"),
        ("Unauthorized", "missing, malformed or unknown gateway key"),
        ("CostLimitExceeded", "the estimate exceeds max_cost_usd (code cost_limit_exceeded) or the tenant's "
                              "budget (code budget_exceeded)"),
        ("Forbidden", "the body names another tenant than the key's"),
        ("NotFound", "unknown model or route"),
        ("RequestTimeout", "the request body did not arrive within CLIENT_BODY_TIMEOUT"),
        ("PayloadTooLarge", "the body exceeds MAX_REQUEST_BYTES"),
        ("RateLimited", "a per-tenant/per-key limit, or every upstream rate-limited (Retry-After says when)"),
        ("UpstreamError", "every target failed"),
        ("Unavailable", "upstreams overloaded, or the shared rate-limit store is down (fail-closed)"),
        ("UpstreamTimeout", "the upstream did not answer in time"),
    )
}
RESPONSES["RateLimited"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}, **_RATE_HEADERS}

HEADERS: dict[str, Any] = {
    "X-Request-ID": {"description": "the client's own id if it sent a sane one, else a UUID",
                     "schema": {"type": "string"}},
    **{f"x-ratelimit-{what}-{kind}": {"description": f"{what} of the tightest {kind}-per-minute limit",
                                      "schema": {"type": "string"}}
       for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")},
}

_Q = [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
    ("from", {"type": "string", "description": "ISO date or datetime"}),
    ("to", {"type": "string", "description": "ISO date or datetime"}),
    ("tenant", _S),
    ("group_by", {"type": "string", "description": "comma-separated: tenant, provider, model, day, month"}),
)]

_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def build_document() -> dict[str, Any]:
    chat_ok = {"description": "a chat completion, or an SSE stream of chunks when stream is true",
               "headers": dict(_GATEWAY_HEADERS), "content": {**_json(_ref("ChatCompletion")), **_SSE}}
    paths = {
        "/v1/chat/completions": {"post": _op(
            "OpenAI-compatible chat completion (any provider; stream or not)", "createChatCompletion",
            _responses(chat_ok, 400, 402, 403, 404, 408, 413, 502, 503, 504, limited=True),
            body="ChatCompletionRequest", tags=["openai"])},
        "/v1/models": {"get": _op("Models of configured providers (OpenAI list format)", "listModels",
                                  _responses({"description": "model list", "content": _json(_ref("ModelList"))}),
                                  tags=["openai"])},
        "/v1/models/{model}": {"get": _op(
            "One model of a configured provider (openai SDK models.retrieve)", "getModel",
            _responses({"description": "the model", "content": _json(
                {"type": "object", "required": ["id", "object", "owned_by"],
                 "properties": {"id": _S, "object": {"const": "model"}, "created": {"type": "integer"},
                                "owned_by": _S, "pricing": {"type": "object"}}})}, 404),
            params=[{"name": "model", "in": "path", "required": True, "schema": _S}], tags=["openai"])},
        "/api/query": {"post": _op(
            "Gateway-native query (original design)", "query",
            _responses({"description": "the answer", "content": _json(_ref("QueryResponse"))},
                       400, 402, 403, 404, 408, 413, 502, 503, 504, limited=True),
            body="QueryRequest", tags=["native"])},
        "/api/status": {"get": _op("Provider status: configured, available, circuit, last error", "status",
                                   _responses({"description": "status", "content": _json(_ref("Status"))}),
                                   tags=["native"])},
        "/v1/gateway/query": {"post": _op(
            "Query with cost control (max_cost_usd, dry_run) and metrics", "gatewayQuery",
            _responses({"description": "the answer with cost and metrics",
                        "content": _json(_ref("GatewayQueryResponse"))},
                       400, 402, 403, 404, 408, 413, 502, 503, 504, limited=True),
            body="GatewayQueryRequest", tags=["native"])},
        "/v1/gateway/cost-estimate": {"post": _op(
            "Estimate tokens and cost without calling a model", "costEstimate",
            _responses({"description": "the estimate", "content": _json(_ref("CostEstimate"))}, 400, 404, 408, 413),
            body="CostEstimateRequest", tags=["native"])},
        "/v1/gateway/usage": {"get": _op(
            "Spend, tokens and request counts from the ledger", "usage",
            _responses({"description": "usage", "content": _json(_ref("Usage"))}, 400, 403, 503), params=_Q,
            tags=["native"])},
        "/v1/gateway/requests": {"get": _op(
            "The most recent requests (bounded, newest first)", "recentRequests",
            _responses({"description": "recent requests", "content": _json(_ref("RecentRequests"))}, 400, 403, 503),
            params=[{"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "tenant", "in": "query", "required": False, "schema": _S}], tags=["native"])},
        "/healthz": {"get": _op("Liveness: 200 as soon as requests are accepted", "healthz",
                                _responses({"description": "ok", "content": _json(
                                    {"type": "object", "properties": {"status": {"const": "ok"}}})},
                                    authed=False), authed=False, tags=["operations"])},
        "/metrics": {"get": _op("Prometheus metrics (text format)", "metrics",
                                _responses({"description": "metrics", "content": {
                                    "text/plain": {"schema": {"type": "string"}}}}, authed=False),
                                authed=False, tags=["operations"])},
        "/openapi.json": {"get": _op("This document", "openapi",
                                     _responses({"description": "OpenAPI 3.1", "content": _json({"type": "object"})},
                                                authed=False), authed=False, tags=["operations"])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway", "version": VERSION,
                 "description": "An OpenAI-compatible LLM gateway. Point any OpenAI SDK's base_url at /v1. "
                                "Errors are always {\"error\": {message, type, param, code, request_id}}."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "openai"}, {"name": "native"}, {"name": "operations"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "headers": HEADERS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a gateway key (GATEWAY_API_KEYS or [[keys]]); required for "
                                              "/v1/* and /api/* when keys are configured"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


DOCUMENT = build_document()
_BODY = orjson.dumps(DOCUMENT)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
