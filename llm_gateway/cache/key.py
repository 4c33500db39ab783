"""The cache key: a hash of the canonical request, per tenant.

What goes in: the tenant, the provider and model of the request's *first* target (as
resolved, so ``gpt-4o-mini`` and ``openai/gpt-4o-mini`` share an entry), the messages
and every other request field — temperature, top_p, n, seed, stop, max tokens,
penalties, logit_bias, logprobs, tools, tool_choice, response_format, ... A field we do
not know splits the key: an unknown field might change the answer, and a cache that is
never wrong beats one that hits more often.

What stays out (it cannot change the answer): ``model`` as typed (the resolved target
replaces it), ``stream`` and ``stream_options`` (a stream and a non-stream request
share one entry), ``user``, ``metadata``, ``store``, ``service_tier``,
``prompt_cache_key``, ``safety_identifier``; the gateway extension fields
(``fallbacks``, ``task_type``, ``cache``) and the request id never reach the body.
``None`` values count as absent (the adapters treat them so too).

The bytes hashed are ``orjson`` with sorted keys, so key order in the client's JSON
does not matter. Whole-number floats of the sampling parameters are normalised
(``temperature: 1`` and ``1.0`` are the same request).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

#: bump when the entry format or the key recipe changes (old entries are then ignored)
VERSION = "v1"
PREFIX = f"llmgw:cache:{VERSION}:"

#: request fields that cannot change the answer
IGNORED = frozenset({
    "model", "stream", "stream_options", "user", "metadata", "store", "service_tier",
    "prompt_cache_key", "safety_identifier",
    # gateway extensions (already removed by validation; listed so the key never depends on it)
    "fallbacks", "task_type", "cache", "request_id",
})
_FLOATS = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})


def canonical(tenant: str | None, provider: str, model: str, body: dict[str, Any]) -> bytes:
    """The exact bytes the key hashes (exposed for tests and debugging)."""
    req: dict[str, Any] = {}
    for k, v in body.items():
        if v is None or k in IGNORED:
            continue
        if k in _FLOATS and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        req[k] = v
    doc = {"tenant": tenant or "default", "provider": provider, "model": model, "request": req}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def cache_key(tenant: str | None, provider: str, model: str, body: dict[str, Any]) -> str:
    """``llmgw:cache:v1:<blake2b-256 hex>`` for this tenant and canonical request."""
    digest = hashlib.blake2b(canonical(tenant, provider, model, body), digest_size=32).hexdigest()
    return PREFIX + digest
