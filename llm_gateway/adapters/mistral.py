"""Mistral chat completions — OpenAI's wire format with Mistral's differences.

Checked 2026-11-26 against Mistral's API reference (``POST /v1/chat/completions``) and
the behaviour documented for its strict request validation:

* Mistral answers **422** to any field it does not know, so the body is built from an
  allow-list: ``seed`` is sent as ``random_seed``; ``max_completion_tokens`` becomes
  ``max_tokens``; ``stream_options`` is consumed here (Mistral puts ``usage`` on the
  last chunk of every stream by itself); ``user`` and other OpenAI-only fields are a
  clear 400 naming the field, before any upstream call.
* A trailing assistant message with ``"prefix": true`` is Mistral's own prefill; the
  answer *starts with* that prefix ("force the model to start its answer by the
  content of the message"), so stream recovery skips it (``prefill_echoes_prefix``).
* Errors: 422 ``{"object": "error", "message": {"detail": [{"loc": [...], "msg": ...}]}}``,
  401 ``{"message": "Unauthorized"}``, 429 with ``Retry-After`` when rate limited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .. import errors
from .base import reject_unsupported
from .openai import OpenAIAdapter

_SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "seed",
    "random_seed", "tools", "tool_choice", "parallel_tool_calls", "response_format",
    "prediction", "safe_prompt",
})


class MistralAdapter(OpenAIAdapter):
    kind = "mistral"
    supports_prefill = True
    prefill_echoes_prefix = True
    path = "/v1/chat/completions"

    def translate(self, req: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
        reject_unsupported(req, _SUPPORTED, "Mistral")
        body = {k: v for k, v in req.items() if v is not None and k != "stream_options"}
        body["model"] = model
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.GatewayError:
        if status == 422:
            param, msg = _validation_detail(body)
            return errors.BadRequest(
                f"mistral rejected the request (HTTP 422): {msg}", param=param,
                provider=self.name, upstream_status=status,
            )
        return super().parse_error(status, headers, body)


def _validation_detail(body: bytes) -> tuple[str | None, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "invalid request"
    msg = data.get("message") if isinstance(data, dict) else None
    detail = msg.get("detail") if isinstance(msg, dict) else (data.get("detail") if isinstance(data, dict) else None)
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(x) for x in detail[0].get("loc", []) if x != "body"]
        return (".".join(loc) or None), str(detail[0].get("msg", "invalid request"))
    if isinstance(msg, str):
        return None, msg
    return None, "invalid request"
