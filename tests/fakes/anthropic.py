"""A fake Anthropic Messages API server, faithful to the documented wire format.

Checked on 2026-11-26 against the anthropic SDK 2.14.0 types and Anthropic's errors and
streaming docs. ``POST /v1/messages`` only:

* ``anthropic-version`` header required (400 otherwise). Auth by ``x-api-key``; with a
  version >= 2026-10-21 also ``Authorization: Bearer`` (what SDK 2.x sends). Otherwise
  401 ``authentication_error``.
* ``model``, ``messages``, ``max_tokens`` required ("max_tokens: Field required");
  unknown top-level fields refused ("foo: Extra inputs are not permitted"), and so are
  temperature/top_p/top_k with version >= 2026-10-21; temperature above 1 is refused.
* A ``system`` role inside ``messages`` is refused with 2023-06-01 (SDK 2.x types carry a
  system message role for the new version, so it is let through there). Empty or
  whitespace-only text blocks, empty non-final messages, a final assistant turn ending
  in whitespace, stop sequences that are empty or whitespace, a ``metadata.user_id``
  that looks like an e-mail address, ``tool_use`` ids outside ``[a-zA-Z0-9_-]+`` and
  ``tool_use``/``tool_result`` blocks in a request without ``tools`` are refused, as
  upstream does.
* Answers ``self.text`` (or ``Fault.text``): cut at a stop sequence (stop_reason
  ``stop_sequence``) or at ``max_tokens`` words (``max_tokens``). With ``tool_call`` set
  (``{"name": ..., "input": {...}}``) and tools in the request it answers a ``tool_use``.
  A final assistant turn (prefill) is continued; its text is recorded in ``prefills``.
* Streams: message_start, content_block_start, ping, content_block_delta*,
  content_block_stop, message_delta, message_stop, via ``FakeVendor.stream_events``; a
  tool_use block's deltas start with ``partial_json: ""``, as upstream's do.
  ``Fault(body=FakeAnthropic.error_body("overloaded_error", "Overloaded"))`` without a
  status on a streaming request sends an in-stream ``event: error`` after the first
  delta (HTTP 200 already sent).
* Errors: ``{"type":"error","error":{"type","message"},"request_id"}`` plus a
  ``request-id`` header; ``Fault(status=529, body=FakeAnthropic.error_body(...))``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from .base import Fault, FakeVendor, flatten_content, sse, words

NEW_VERSION = "2026-10-21"
KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "output_config", "cache_control", "inference_geo", "speed", "diagnostics",
})
SAMPLING = ("temperature", "top_p", "top_k")
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_fake0123456789"}


def ant_error(status: int, type_: str, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(error_body(type_, message)),
                        content_type="application/json", headers={"request-id": "req_fake0123456789"})


def _invalid(message: str) -> web.Response:
    return ant_error(400, "invalid_request_error", message)


def _text_blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]


class FakeAnthropic(FakeVendor):
    name = "anthropic"
    api_key = "sk-ant-test-0123456789"
    default_text = "Hello from fake Claude."
    error_body = staticmethod(error_body)

    def __init__(self) -> None:
        super().__init__()
        self.prefills: list[str] = []
        self.tool_call: dict[str, Any] | None = None

    def reset(self) -> None:
        super().reset()
        self.prefills.clear()
        self.tool_call = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.messages)]

    # ------------------------------------------------------------------ auth/validation
    def check_headers(self, request: web.Request) -> web.Response | None:
        version = request.headers.get("anthropic-version")
        if not version:
            return _invalid("anthropic-version: header is required")
        key = request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        if key is None and version >= NEW_VERSION and auth.startswith("Bearer "):
            key = auth[len("Bearer "):]
        if key is None:
            return ant_error(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return ant_error(401, "authentication_error", "invalid x-api-key")
        return None

    def validate(self, body: Any, version: str) -> web.Response | None:
        if not isinstance(body, dict):
            return _invalid("There was an error parsing the body of your request.")
        for k in body:
            if k not in KNOWN_FIELDS or (k in SAMPLING and version >= NEW_VERSION):
                return _invalid(f"{k}: Extra inputs are not permitted")
        for k in ("max_tokens", "messages", "model"):
            if k not in body:
                return _invalid(f"{k}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 0:
            return _invalid("max_tokens: Input should be a valid integer greater than or equal to 0")
        stops = body.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or not all(isinstance(x, str) and x.strip()
                                                                         for x in stops)):
            return _invalid("stop_sequences: each stop sequence must contain non-whitespace")
        user = (body.get("metadata") or {}).get("user_id")
        if isinstance(user, str) and "@" in user:
            return _invalid("metadata.user_id: user_id appears to contain an email address")
        t = body.get("temperature")
        if t is not None and (not isinstance(t, int | float) or not 0 <= t <= 1):
            return _invalid("temperature: Input should be less than or equal to 1")
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return _invalid("messages: at least one message is required")
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role == "system" and version < NEW_VERSION:
                return _invalid('messages: Unexpected role "system". The Messages API accepts a top-level '
                                '`system` parameter, not "system" as an input message role.')
            if role not in ("user", "assistant", "system"):
                return _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = m.get("content")
            if content is None:
                return _invalid(f"messages.{i}.content: Field required")
            if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "text"
                                                 and not b.get("text") for b in content):
                return _invalid("messages: text content blocks must be non-empty")
            if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "text"
                                                 and not str(b.get("text")).strip() for b in content):
                return _invalid("messages: text content blocks must contain non-whitespace text")
            for b in content if isinstance(content, list) else []:
                if not isinstance(b, dict):
                    continue
                if b.get("type") == "tool_use" and not _TOOL_ID.fullmatch(str(b.get("id"))):
                    return _invalid(f"messages.{i}.content.tool_use.id: String should match pattern "
                                    "'^[a-zA-Z0-9_-]+$'")
                if b.get("type") in ("tool_use", "tool_result") and not body.get("tools"):
                    return _invalid("Requests which include `tool_use` or `tool_result` blocks must define tools.")
            if i < len(msgs) - 1 and (content == "" or content == []):
                return _invalid(f"messages.{i}: all messages must have non-empty content except for "
                                "the optional final assistant message")
        last = msgs[-1]
        if last.get("role") == "assistant":
            texts = _text_blocks(last.get("content"))
            if texts and texts[-1] != texts[-1].rstrip():
                return _invalid("messages: final assistant content cannot end with trailing whitespace")
        return None

    # ------------------------------------------------------------------ answers
    def input_tokens(self, body: dict[str, Any]) -> int:
        system = body.get("system")
        n = words(flatten_content(system)) if system else 0
        return n + sum(words(flatten_content(m.get("content"))) for m in body["messages"]) + 3

    def answer(self, body: dict[str, Any], fault: Fault) -> tuple[str, str, str | None]:
        """(text, stop_reason, stop_sequence) for this request."""
        text = fault.text if fault.text is not None else self.text
        for seq in body.get("stop_sequences") or []:
            if seq and seq in text:
                return text[: text.index(seq)], "stop_sequence", seq
        parts = text.split(" ")
        if len(parts) > body["max_tokens"]:
            return " ".join(parts[: body["max_tokens"]]), "max_tokens", None
        return text, "end_turn", None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        fault = self.next_fault()
        if (denied := self.check_headers(request)) is not None:
            return denied
        version = request.headers["anthropic-version"]
        if (bad := self.validate(rec.body, version)) is not None:
            return bad
        if (pre := await self.apply_pre_fault(request, fault)) is not None:
            return pre
        body = rec.body
        last = body["messages"][-1]
        if last["role"] == "assistant":
            self.prefills.append("".join(_text_blocks(last["content"])))
        text, stop, seq = self.answer(body, fault)
        tool = self.tool_call if self.tool_call and body.get("tools") else None
        if tool:
            stop, seq = "tool_use", None
        usage = {"input_tokens": self.input_tokens(body), "output_tokens": words(text) + (5 if tool else 0),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if body.get("stream"):
            return await self.stream(request, fault, body, text, tool, stop, seq, usage)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if tool:
            content.append({"type": "tool_use", "id": "toolu_fake01", "name": tool["name"], "input": tool["input"]})
        resp = {"id": "msg_fake0123456789", "type": "message", "role": "assistant", "model": body["model"],
                "content": content, "stop_reason": stop, "stop_sequence": seq, "usage": usage}
        return web.Response(body=orjson.dumps(resp), content_type="application/json",
                            headers={"request-id": "req_fake0123456789", **self.ratelimit_headers(), **fault.headers})

    @staticmethod
    def ratelimit_headers() -> dict[str, str]:
        return {"anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-requests-remaining": "3999",
                "anthropic-ratelimit-requests-reset": "2026-11-26T00:00:01Z"}

    async def stream(self, request: web.Request, fault: Fault, body: dict[str, Any], text: str,
                     tool: dict[str, Any] | None, stop: str, seq: str | None,
                     usage: dict[str, Any]) -> web.StreamResponse:
        start = {"id": "msg_fake0123456789", "type": "message", "role": "assistant", "model": body["model"],
                 "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**usage, "output_tokens": 1}}
        events = [sse({"type": "message_start", "message": start}, "message_start"),
                  sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      "content_block_start"),
                  sse({"type": "ping"}, "ping")]
        pieces = [w + " " for w in text.split(" ")] if text else []
        if pieces:
            pieces[-1] = pieces[-1][:-1]
        for p in pieces:
            events.append(sse({"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": p}}, "content_block_delta"))
        if isinstance(fault.body, dict) and fault.body.get("type") == "error":
            events = events[:4] + [sse(fault.body, "error")]
            return await self.stream_events(request, fault, events, {"request-id": "req_fake0123456789"})
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        if tool:
            events.append(sse({"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_fake01", "name": tool["name"], "input": {}}}, "content_block_start"))
            raw = orjson.dumps(tool["input"]).decode() if tool["input"] else ""
            events.append(sse({"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": ""}}, "content_block_delta"))
            for i in range(0, len(raw), 8):
                events.append(sse({"type": "content_block_delta", "index": 1,
                                   "delta": {"type": "input_json_delta", "partial_json": raw[i:i + 8]}},
                                  "content_block_delta"))
            events.append(sse({"type": "content_block_stop", "index": 1}, "content_block_stop"))
        events.append(sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": seq},
                           "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta"))
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return await self.stream_events(request, fault, events,
                                        {"request-id": "req_fake0123456789", **self.ratelimit_headers()})
