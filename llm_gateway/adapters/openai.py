"""OpenAI Chat Completions — a near pass-through; also serves OpenAI-compatible servers.

Checked 2026-11-26 against the installed ``openai`` SDK 3.57 (``resources/chat``,
``_streaming.py``, ``types/chat``) and OpenAI's API reference:

* ``POST {OPENAI_BASE_URL}/chat/completions``, ``Authorization: Bearer <key>``; an extra
  provider (Ollama, vLLM ...) with no key sends no ``Authorization`` at all.
* Streams: ``chat.completion.chunk`` events, ``data: [DONE]`` last. We always ask for
  ``stream_options.include_usage`` so the final usage chunk (``choices: []``) arrives;
  the gateway re-emits usage to the client only when the client asked for it.
* Errors: ``{"error": {"message", "type", "param", "code"}}``; ``context_length_exceeded``
  and ``content_policy_violation`` / ``content_filter`` codes; 429 carries
  ``retry-after`` / ``retry-after-ms`` and ``x-ratelimit-reset-requests|tokens``
  ("1s", "6m0s", "20ms"); ``insufficient_quota`` is a 429 that waiting does not cure.

Content chunks are passed through as the bytes the vendor sent (no re-encoding).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from .. import errors
from ..logging import event
from ..sse import SSEEvent
from .base import Adapter, Chunk, StreamTranslator, UpstreamRequest, header, parse_retry_after

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """OpenAI's ``x-ratelimit-reset-*`` durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m``."""
    if not value:
        return None
    total, found = 0.0, False
    for num, unit in _DURATION.findall(value):
        total += float(num) * _UNIT[unit]
        found = True
    if not found:
        try:
            return float(value)
        except ValueError:
            return None
    return total


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) from an OpenAI-style error body; tolerant of junk."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        msg = err.get("message")
        return (str(msg) if msg else "", err.get("type"), _s(err.get("code")), _s(err.get("param")))
    if isinstance(err, str):
        return err, None, None, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], _s(data.get("type")), _s(data.get("code")), None
    return "", None, None, None


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


class OpenAIAdapter(Adapter):
    kind = "openai"
    supports_prefill = False
    path = "/chat/completions"

    def __init__(self, provider: Any, settings: Any) -> None:
        super().__init__(provider, settings)
        if provider.supports_prefill is not None:
            self.supports_prefill = provider.supports_prefill
        self.url = provider.base_url + self.path
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if provider.api_key:
            self._headers["Authorization"] = f"Bearer {provider.api_key.get()}"
        self._stream_headers = {**self._headers, "Accept": "text/event-stream"}

    # ------------------------------------------------------------------ request
    def translate(self, req: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
        """The canonical request as this vendor's body (OpenAI: nearly unchanged)."""
        body = dict(req)
        body["model"] = model
        msgs = body.get("messages") or []
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("prefix"):
            if not self.supports_prefill:
                raise errors.UnsupportedParameter(
                    f"{self.name} cannot continue an assistant prefix (messages[-1].prefix).",
                    param="messages",
                )
        if stream:
            body["stream"] = True
            if self.provider.stream_usage:
                opts = dict(body.get("stream_options") or {})
                opts["include_usage"] = True
                body["stream_options"] = opts
            else:  # a server that refuses the field: usage is estimated (flagged) instead
                body.pop("stream_options", None)
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def build_request(self, req: dict[str, Any], model: str, *, stream: bool) -> UpstreamRequest:
        body = self.translate(req, model, stream)
        return UpstreamRequest(
            "POST", self.url, self._stream_headers if stream else self._headers, orjson.dumps(body), stream
        )

    # ------------------------------------------------------------------ response
    def parse_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise errors.UpstreamBadResponse(
                f"{self.name} answered with a body that is not JSON", provider=self.name, model=model
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise errors.UpstreamBadResponse(
                f"{self.name} answered without 'choices'", provider=self.name, model=model
            )
        data.setdefault("object", "chat.completion")
        if not data.get("id"):  # some OpenAI-compatible servers leave it out; OpenAI never does
            data["id"] = "chatcmpl-" + uuid.uuid4().hex[:24]
        data.setdefault("model", model)
        data.setdefault("created", int(time.time()))
        return data

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.GatewayError:
        msg, typ, code, param = _error_fields(body)
        where = f"{self.name} returned HTTP {status}"
        text = f"{where}: {msg}" if msg else where
        kw: dict[str, Any] = {"provider": self.name, "upstream_status": status}
        low = (msg or "").lower()
        if code == "context_length_exceeded" or "maximum context length" in low or "context window" in low:
            return errors.ContextTooLong(text, param=param or "messages", **kw)
        if code in ("content_policy_violation", "content_filter") or typ == "content_policy_violation":
            return errors.ContentPolicy(text, param=param, **kw)
        if status in (401, 403):
            return errors.UpstreamAuthFailed(
                f"{self.name} rejected the gateway's credentials (HTTP {status}); check its API key.",
                detail=text, **kw)  # the vendor's words (a masked part of the key) for the log only
        if status == 429:
            if code == "insufficient_quota":
                err = errors.RateLimited(text, code="upstream_quota_exhausted", **kw)
                err.retryable = False  # waiting does not refill a quota
                return err
            wait = parse_retry_after(headers)
            if wait is None:
                resets = [parse_reset(header(headers, h)) for h in
                          ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
                known = [r for r in resets if r is not None]
                wait = max(known) if known else None
            return errors.RateLimited(text, retry_after=wait, **kw)
        if status == 404:
            return errors.ModelNotFound(text, param="model", **kw)
        if status == 413:
            return errors.PayloadTooLarge(text, **kw)
        if status in (408, 504):
            return errors.UpstreamTimeout(text, **kw)
        if status in (503, 529):
            return errors.Overloaded(text, retry_after=parse_retry_after(headers), **kw)
        if status >= 500:
            return errors.UpstreamUnavailable(text, **kw)
        return errors.BadRequest(text, param=param, code=code or "invalid_request", **kw)

    def refuses_stream_usage(self, body: bytes) -> bool:
        """Servers that predate ``stream_options`` (older Ollama, vLLM, LM Studio) refuse the
        field: this provider's streams go without it from now on (usage then estimated and
        flagged, as with ``stream_usage = false``), and the request is sent again."""
        if not self.provider.stream_usage or body.find(b"stream_options") < 0 or "//api.openai.com" in self.url:
            return False  # OpenAI itself takes the field: a 400 naming it is about something else
        self.provider.stream_usage = False
        event(logging.WARNING, f"{self.name} refuses stream_options; its streams go without it from now on "
              "(usage estimated); set stream_usage = false in its [providers] table to skip this",
              event="error", error_type="stream_usage_unsupported", status=400, provider=self.name,
              model=None, attempt=None, detail=body[:200].decode("utf-8", "replace"))
        return True

    def new_stream_translator(self, req: dict[str, Any], model: str) -> StreamTranslator:
        asked = bool((req.get("stream_options") or {}).get("include_usage"))
        return OpenAIStreamTranslator(model=model, adapter=self,
                                      strip_usage=self.provider.stream_usage and not asked)

    def quota_exhausted(self, headers: Mapping[str, str]) -> float | None:
        """``x-ratelimit-remaining-requests|tokens: 0`` → the matching ``x-ratelimit-reset-*``."""
        waits = []
        for kind in ("requests", "tokens"):
            if header(headers, f"x-ratelimit-remaining-{kind}") == "0":
                waits.append(parse_reset(header(headers, f"x-ratelimit-reset-{kind}")) or 1.0)
        return max(waits) if waits else None


class OpenAIStreamTranslator(StreamTranslator):
    """OpenAI chunks pass through as the bytes received; usage is taken out."""

    def __init__(self, model: str, adapter: OpenAIAdapter, strip_usage: bool = False) -> None:
        super().__init__(model=model)
        self.adapter = adapter
        #: the gateway asked for usage the client did not: chunks lose the ``"usage":null``
        #: that asking adds, and look as they would have without it
        self.strip_usage = strip_usage
        #: (id, created) for a server whose chunks carry none (some OpenAI-compatible
        #: ones): every chunk gets them, as OpenAI's all carry the same
        self.fill: tuple[str, int] | None = None

    def feed(self, event: SSEEvent) -> list[Chunk]:
        return self.feed_data(event.raw if event.raw is not None else event.data.encode())

    def feed_data(self, raw: bytes) -> list[Chunk]:
        if raw == b"[DONE]":
            self.done = True
            return []
        obj = orjson.loads(raw)  # JSONDecodeError is a ValueError: a malformed event
        if not isinstance(obj, dict):
            raise ValueError("stream event is not a JSON object")
        if "error" in obj and obj["error"]:
            err = obj["error"]
            status = 500
            if isinstance(err, dict):
                code = err.get("code")
                status = code if isinstance(code, int) else (429 if err.get("type") == "rate_limit_error" else 500)
            raise self.adapter.parse_error(status, {}, orjson.dumps(obj))
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise ValueError("stream event without 'choices'")
        if self.head is None:
            if not obj.get("id") or not obj.get("created"):
                self.fill = (obj.get("id") or "chatcmpl-" + uuid.uuid4().hex[:24],
                             obj.get("created") or int(time.time()))
            cid, created = self.fill or (obj.get("id"), obj.get("created"))
            self.head = (cid, created, obj.get("model"), obj.get("system_fingerprint"))
        for ch in choices:
            if ch.get("index", 0) == 0:
                delta = ch.get("delta") or {}
                content = delta.get("content")
                if content:
                    self.text.append(content)
                if delta.get("tool_calls"):
                    self.tools_seen = True
                if ch.get("finish_reason"):
                    self.finish_reason = ch["finish_reason"]
        usage = obj.get("usage")
        if usage:
            self.usage = usage
            if not choices:
                return []
            obj.pop("usage")
            return [obj]
        if not choices:
            return []
        if self.fill is not None:
            obj["id"], obj["created"] = self.fill
            if self.strip_usage and "usage" in obj and obj["usage"] is None:
                del obj["usage"]
            return [obj]
        if self.strip_usage:
            if raw.endswith(b',"usage":null}'):
                return [raw[:-14] + b"}"]
            if raw.endswith(b', "usage": null}'):
                return [raw[:-16] + b"}"]
        return [raw]
