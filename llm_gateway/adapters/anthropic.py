"""Anthropic Messages API adapter: canonical (OpenAI chat) <-> ``POST /v1/messages``.

Wire format checked on 2026-11-26 against the installed ``anthropic`` SDK 2.14.0
(``_client.py`` auth headers, ``_constants.py`` ANTHROPIC_API_VERSION = "2026-10-21",
``types/message_create_params.py``, ``types/stop_reason.py``, ``types/shared/error_*``,
``types/raw_*`` stream events, ``_streaming.py``) and Anthropic's docs (errors page:
400/401/403/404/413/429/500/529 and the ``{"type":"error","error":{...},"request_id"}``
shape; streaming page: message_start, content_block_start/delta/stop, message_delta,
message_stop, ping, error events, unknown events to be ignored; 2026-10-21 migration
notes: temperature/top_p/top_k answer 400, SDK 2.x sends ``Authorization: Bearer``).

Mapping decisions (the lead's list, summarised):

* ``system``/``developer`` messages (anywhere) -> top-level ``system`` joined by a blank
  line; consecutive same-role turns merge into one turn; ``tool`` messages become
  ``tool_result`` blocks of a user turn; a final assistant message is a prefill (its
  trailing whitespace is stripped: Anthropic rejects it).
* ``max_tokens`` is required upstream: max_completion_tokens, else max_tokens, else
  ``settings.anthropic_default_max_tokens``.
* Values equal to the OpenAI default (``n=1``, ``logprobs=false``, zero penalties,
  ``response_format={"type":"text"}``, ``parallel_tool_calls=true``) are no-ops; any
  other field Anthropic cannot take is an ``UnsupportedParameter`` naming it.
* ``top_k`` (not an OpenAI field, but sent by some clients) is passed through with
  versions before 2026-10-21. ``temperature`` above 1 is refused, never clamped.
* ``image_url.detail`` is a resolution hint with no Anthropic counterpart; ignored.
* SDK 2.x types also allow a ``system`` role inside ``messages``; we keep the top-level
  ``system`` field, which every version accepts.
* Response ``thinking`` blocks and stream thinking/signature deltas are not content.

Message, content-part and tool conversion lives in ``anthropic_tools.py``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .. import errors
from ..sse import SSEEvent
from .anthropic_tools import convert_messages, convert_tools, unsupported
from .base import (Adapter, Chunk, StreamTranslator, UpstreamRequest, header, parse_retry_after,
                   reject_unsupported)

DEFAULT_VERSION = "2023-06-01"
#: from this ``anthropic-version`` on: Bearer auth, no temperature/top_p/top_k
BEARER_VERSION = "2026-10-21"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "stop", "user", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "reasoning_effort",
})
#: OpenAI reasoning_effort values with an ``output_config.effort`` of the same name
EFFORTS = frozenset({"low", "medium", "high", "xhigh"})
#: supported only at their OpenAI default value (anything else is refused)
NEUTRAL = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0,
           "response_format": {"type": "text"}}
SAMPLING = ("temperature", "top_p", "top_k")
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}
_CONTEXT = re.compile(r"prompt is too long|context (limit|window|length)", re.I)


_CONTACT = re.compile(r"@|^\s*\+?[\d\s().-]{7,}\s*$")
#: 429 ``error.details.error_code`` values that waiting does not cure
_SPEND_LIMITS = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})


def user_id(user: Any) -> Any:
    """OpenAI ``user`` -> Anthropic ``metadata.user_id``. Anthropic asks for an opaque id and
    answers 400 to one that looks like an e-mail address or a phone number, which OpenAI
    takes (and apps send): those, and ids over Anthropic's 256 characters, go out as their
    SHA-256 (hex), the same user always the same id."""
    if isinstance(user, str) and (len(user) > 256 or _CONTACT.search(user)):
        return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
    return user


def _output_config(req: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` json_schema -> ``output_config.format`` (structured outputs);
    ``reasoning_effort`` -> ``output_config.effort``. Checked against the anthropic SDK
    2.10 params (``OutputConfigParam``: ``format`` {type json_schema, schema}, ``effort``
    low|medium|high|xhigh|max). Models without the feature answer a 400 of their own."""
    out: dict[str, Any] = {}
    rf = req.get("response_format")
    if rf is not None and rf != NEUTRAL["response_format"]:
        js = rf.get("json_schema") if isinstance(rf, dict) and rf.get("type") == "json_schema" else None
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise unsupported("Anthropic takes response_format json_schema with a schema (structured outputs), "
                              "not json_object; send a schema, or route to another provider.", "response_format")
        out["format"] = {"type": "json_schema", "schema": schema}
    effort = req.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise unsupported(f"reasoning_effort {effort!r} has no Anthropic effort level (low, medium, high, "
                              "xhigh).", "reasoning_effort")
        out["effort"] = effort
    return out


def usage_of(u: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Anthropic usage -> OpenAI usage (prompt tokens include both cache counts)."""
    if not isinstance(u, Mapping):
        return None
    def n(key: str) -> int:
        v = u.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    cache_read = n("cache_read_input_tokens")
    prompt = n("input_tokens") + cache_read + n("cache_creation_input_tokens")
    completion = n("output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cache_read}}


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    supports_prefill = True

    def __init__(self, provider: Any, settings: Any) -> None:
        super().__init__(provider, settings)
        self.version = provider.api_version or DEFAULT_VERSION
        if provider.supports_prefill is not None:
            self.supports_prefill = provider.supports_prefill

    # ------------------------------------------------------------------ request
    def build_request(self, req: dict[str, Any], model: str, *, stream: bool) -> UpstreamRequest:
        reject_unsupported({k: v for k, v in req.items() if k not in NEUTRAL or v != NEUTRAL[k]},
                           SUPPORTED, "Anthropic")
        new_api = self.version >= BEARER_VERSION
        for k in SAMPLING:
            if new_api and req.get(k) is not None:
                raise unsupported(f"'{k}' is rejected by the Anthropic API version configured for this "
                                  f"gateway (ANTHROPIC_VERSION / api_version {self.version}); remove it, "
                                  f"or configure api_version 2023-06-01.", k)
        temp = req.get("temperature")
        if temp is not None and (isinstance(temp, bool) or not isinstance(temp, int | float)):
            raise errors.BadRequest("temperature must be a number.", param="temperature")
        if temp is not None and not 0 <= temp <= 1:
            raise unsupported(f"temperature {temp} is outside Anthropic's range 0..1 (OpenAI allows 0..2); "
                              "send a value between 0 and 1.", "temperature")
        system, turns = convert_messages(req.get("messages"), prefill_ok=self.supports_prefill)
        if not turns:
            raise errors.BadRequest("Anthropic needs at least one user or assistant message.", param="messages")
        max_tokens = req.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = req.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.settings.anthropic_default_max_tokens
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
        if system:
            body["system"] = "\n\n".join(system)
        for k in SAMPLING:
            if req.get(k) is not None:
                body[k] = req[k]
        stop = req.get("stop")
        if stop is not None:
            stops = [stop] if isinstance(stop, str) else stop
            if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
                raise errors.BadRequest("'stop' must be a string or an array of strings.", param="stop")
            if not all(x.strip() for x in stops):
                raise unsupported("Anthropic refuses a stop sequence that is empty or only whitespace (such as "
                                  "\"\\n\"); remove it from 'stop', or route to another provider.", "stop")
            body["stop_sequences"] = stops
        if req.get("user") is not None:
            body["metadata"] = {"user_id": user_id(req["user"])}
        convert_tools(req, body)
        output = _output_config(req)
        if output:
            body["output_config"] = output
        if stream:
            body["stream"] = True
        headers = {"content-type": "application/json", "anthropic-version": self.version}
        key = self.provider.api_key.get() if self.provider.api_key else ""
        if key:
            if new_api:
                headers["authorization"] = f"Bearer {key}"
            else:
                headers["x-api-key"] = key
        url = self.provider.base_url.rstrip("/") + "/v1/messages"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body), stream)

    # ------------------------------------------------------------------ response
    def parse_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
            blocks = data["content"]
            assert isinstance(blocks, list)
        except Exception:
            raise errors.UpstreamBadResponse("Anthropic returned a response that is not a Message.",
                                             provider=self.name, model=model) from None
        texts, calls = [], []
        for b in blocks:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text":
                texts.append(b.get("text", ""))
            elif b.get("type") == "tool_use":
                calls.append({"id": b.get("id"), "type": "function",
                              "function": {"name": b.get("name"),
                                           "arguments": orjson.dumps(b.get("input") or {}).decode()}})
        reason = data.get("stop_reason")
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                                   "refusal": None}
        if reason == "refusal":
            message["refusal"] = (data.get("stop_details") or {}).get("explanation") or "refused"
        if calls:
            message["tool_calls"] = calls
        return {
            "id": data.get("id") or "msg_unknown", "object": "chat.completion", "created": int(time.time()),
            "model": data.get("model") or model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": STOP_REASONS.get(reason or "", "stop")}],
            "usage": usage_of(data.get("usage")),
        }

    # ------------------------------------------------------------------ errors
    def quota_exhausted(self, headers: Mapping[str, str]) -> float | None:
        """``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining: 0``
        → seconds until the matching ``-reset`` (an RFC 3339 time)."""
        waits = []
        for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
            if header(headers, f"anthropic-ratelimit-{kind}-remaining") == "0":
                waits.append(_seconds_until(header(headers, f"anthropic-ratelimit-{kind}-reset")))
        return max(waits) if waits else None

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.GatewayError:
        etype, msg, ecode = "", "", ""
        try:
            err = orjson.loads(body)["error"]
            etype, msg = str(err.get("type") or ""), str(err.get("message") or "")
            details = err.get("details")
            ecode = str(details.get("error_code") or "") if isinstance(details, dict) else ""
        except Exception:
            msg = body[:200].decode("utf-8", "replace").strip() if body else ""
        key = self.provider.api_key.get() if self.provider.api_key else ""
        if key and key in msg:
            msg = msg.replace(key, "***")
        text = f"Anthropic: {msg}" if msg else f"Anthropic answered HTTP {status}"
        kw: dict[str, Any] = {"provider": self.name, "upstream_status": status}
        if status in (401, 403):
            # The vendor's words stay in the log: they can quote a masked part of the key.
            return errors.UpstreamAuthFailed(f"Anthropic refused the gateway's API key ({etype or status}); "
                                             "check its API key.", detail=text, **kw)
        if status == 402:
            return errors.UpstreamAuthFailed(text, code="upstream_billing_error", **kw)
        if status == 404:
            cls = errors.ModelNotFound if "model" in msg.lower() else errors.NotFound
            return cls(text, **kw)
        if status == 413:
            return errors.PayloadTooLarge(text, **kw)
        if status == 429:
            if ecode in _SPEND_LIMITS:  # a spend limit: not a rate limit, waiting does not cure it
                err = errors.RateLimited(text, code="upstream_quota_exhausted", **kw)
                err.retryable = False
                return err
            return errors.RateLimited(text, retry_after=parse_retry_after(headers), **kw)
        if status == 529 or etype == "overloaded_error":
            return errors.Overloaded(text, retry_after=parse_retry_after(headers), **kw)
        if status in (408, 504) or etype == "timeout_error":
            return errors.UpstreamTimeout(text, **kw)
        if status >= 500 or status == 409:
            return errors.UpstreamUnavailable(text, retry_after=parse_retry_after(headers), **kw)
        # 400 and any other 4xx (Anthropic uses invalid_request_error for those too)
        if _CONTEXT.search(msg):
            return errors.ContextTooLong(text, **kw)
        if "prefill" in msg.lower():
            return errors.UnsupportedParameter(text, param="messages", **kw)
        return errors.BadRequest(text, status=400, **kw)

    def new_stream_translator(self, req: dict[str, Any], model: str) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(model=model, adapter=self)


@dataclass
class AnthropicStreamTranslator(StreamTranslator):
    """Anthropic stream events -> ``chat.completion.chunk`` dicts."""

    adapter: AnthropicAdapter | None = None
    id: str = "msg_unknown"
    created: int = field(default_factory=lambda: int(time.time()))
    raw_usage: dict[str, Any] = field(default_factory=dict)
    tools: dict[int, int] = field(default_factory=dict)  # Anthropic block index -> tool_calls index
    #: tool blocks whose arguments have not been streamed yet (a tool called without input
    #: streams only ``partial_json: ""``: its arguments are "{}" at the block's end)
    no_args: set[int] = field(default_factory=set)

    def identity(self) -> tuple[Any, Any, Any, Any]:
        return self.id, self.created, self.model, None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    KEEPALIVE_EVENTS = frozenset({"ping"})

    def feed(self, event: SSEEvent) -> list[Chunk]:
        if event.event in self.KEEPALIVE_EVENTS:
            return []
        data = orjson.loads(event.data)  # JSONDecodeError is a ValueError
        if not isinstance(data, dict):
            raise ValueError("Anthropic stream event is not a JSON object")
        try:
            return self._translate(data.get("type") or event.event, data, event)
        except (AttributeError, TypeError, KeyError) as e:  # a field of the wrong shape
            raise ValueError(f"malformed Anthropic stream event: {e}") from None

    def _translate(self, kind: Any, data: dict[str, Any], event: SSEEvent) -> list[Chunk]:
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = msg.get("id") or self.id
            self.model = msg.get("model") or self.model
            self.raw_usage.update({k: v for k, v in (msg.get("usage") or {}).items() if v is not None})
            if (u := usage_of(self.raw_usage)) is not None and "input_tokens" in self.raw_usage:
                self.prompt_tokens = u["prompt_tokens"]
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                return [self._chunk({"content": block["text"]})]
            if block.get("type") == "tool_use":
                n = self.tools[data.get("index", 0)] = len(self.tools)
                self.tools_seen = True
                self.no_args.add(data.get("index", 0))
                call = {"index": n, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.text.append(delta["text"])
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta" and data.get("index") in self.tools:
                part = delta.get("partial_json") or ""
                if part:
                    self.no_args.discard(data["index"])
                    call = {"index": self.tools[data["index"]], "function": {"arguments": part}}
                    return [self._chunk({"tool_calls": [call]})]
            return []  # thinking, signature, citations deltas are not content
        if kind == "message_delta":
            self.raw_usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            self.usage = usage_of(self.raw_usage)
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = STOP_REASONS.get(reason, "stop")
                return [self._chunk({}, self.finish_reason)]
            return []
        if kind == "message_stop":
            self.done = True
            if self.raw_usage:
                self.usage = usage_of(self.raw_usage)
            return []
        if kind == "error":  # never a skippable ValueError: the stream has failed
            err = data.get("error") if isinstance(data.get("error"), dict) else {}
            status = _ERROR_STATUS.get(str(err.get("type")), 500)
            adapter = self.adapter
            if adapter is None:
                raise errors.UpstreamUnavailable(f"Anthropic stream error: {err.get('message')}")
            raise adapter.parse_error(status, {}, event.data.encode())
        if kind == "content_block_stop" and data.get("index") in self.no_args:
            self.no_args.discard(data["index"])
            call = {"index": self.tools[data["index"]], "function": {"arguments": "{}"}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # other content_block_stop events and unknown future events


def _seconds_until(stamp: str | None) -> float:
    """An RFC 3339 reset time → seconds from now (at least 1 s when unreadable)."""
    if stamp:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return max(0.0, when.timestamp() - time.time())
        except ValueError:
            pass
    return 1.0
