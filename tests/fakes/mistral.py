"""A fake Mistral chat-completions server: OpenAI-like, with Mistral's strictness.

Unknown fields (``seed``, ``stream_options``, ``user``, ``max_completion_tokens`` ...)
get a 422 with Mistral's validation body; ``random_seed`` is the seed; usage rides
on the last content chunk of a stream (no separate usage chunk); a trailing
assistant message with ``prefix: true`` is continued. 401 is ``{"message": "Unauthorized"}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from .base import Fault, sse, words
from .openai import FakeOpenAI

MISTRAL_FIELDS = frozenset({
    "model", "messages", "stream", "temperature", "top_p", "max_tokens", "stop", "random_seed",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
    "safe_prompt", "parallel_tool_calls", "prediction", "prompt_mode", "metadata", "prompt_cache_key",
    "reasoning_effort", "guardrails",
})


#: client-python's message models: UserMessage/SystemMessage have role and content only
_MESSAGE_KEYS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


def unprocessable(field: str, value: Any, kind: str = "extra_forbidden",
                  msg: str = "Extra inputs are not permitted") -> web.Response:
    body = {"object": "error", "message": {"detail": [
        {"type": kind, "loc": ["body", *field.split(".")], "msg": msg, "input": value}]},
        "type": "invalid_request_error", "param": None, "code": None}
    return web.Response(status=422, body=orjson.dumps(body), content_type="application/json")


def bad_order(message: str) -> web.Response:
    """Mistral's answer to a conversation its template cannot take (code 3230)."""
    return web.Response(status=400, content_type="application/json", body=orjson.dumps({
        "object": "error", "message": message, "type": "invalid_request_message_order", "param": None,
        "code": "3230"}))


#: client-python's ContentChunk types
_CHUNK_TYPES = {"text", "image_url", "document_url", "reference", "file", "thinking", "audio"}


class FakeMistral(FakeOpenAI):
    name = "mistral"
    api_key = "mistral-test-key-0123456789"
    model_suffix = ""
    known_fields = MISTRAL_FIELDS
    default_text = "Bonjour from fake Mistral."

    def __init__(self) -> None:
        super().__init__()
        self.prefills: list[str] = []

    def check_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return web.Response(status=401, body=b'{"message":"Unauthorized","request_id":"fake"}',
                                content_type="application/json")
        return None

    def validate(self, body: Any) -> web.Response | None:
        if isinstance(body, dict):
            for k, v in body.items():
                if k not in self.known_fields:
                    return unprocessable(k, v)
            for i, m in enumerate(body.get("messages") or []):
                role = m.get("role")
                allowed = _MESSAGE_KEYS.get(role)
                if allowed is None:
                    return unprocessable(f"messages.{i}", role)  # e.g. "developer": no such tag
                extra = set(m) - allowed
                if extra:
                    return unprocessable(f"messages.{i}.{role}.{sorted(extra)[0]}", None)
                prev = body["messages"][i - 1].get("role") if i else None
                if role == "user" and prev == "tool":
                    return bad_order("Unexpected role 'user' after role 'tool'")
                if role == "assistant" and not m.get("tool_calls") and not m.get("content"):
                    return bad_order("Assistant message must have either content or tool_calls, but not none.")
                if isinstance(m.get("content"), list):
                    for j, part in enumerate(m["content"]):
                        if not isinstance(part, dict) or part.get("type") not in _CHUNK_TYPES:
                            return unprocessable(f"messages.{i}.{role}.content.{j}", part, "union_tag_invalid",
                                                 "Input tag does not match any of the expected tags")
                ids = [c.get("id") for c in m.get("tool_calls") or []] + ([m["tool_call_id"]] if "tool_call_id" in m else [])
                for tid in ids:
                    if not (isinstance(tid, str) and len(tid) == 9 and tid.isascii() and tid.isalnum()):
                        return web.Response(status=400, content_type="application/json", body=orjson.dumps({
                            "object": "error", "message": f"Tool call id was {tid} but must be a-z, A-Z, 0-9, "
                            "with a length of 9.", "type": "invalid_request_message_order", "param": None,
                            "code": "3280"}))
            msgs = body.get("messages") or []
            last = msgs[-1] if msgs else {}
            if last.get("role") not in ("user", "tool") and not (last.get("role") == "assistant" and last.get("prefix")):
                return bad_order(f"Expected last role User or Tool (or Assistant with prefix True) for serving "
                                 f"but got {last.get('role')}")
            for i, t in enumerate(body.get("tools") or []):
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and "parameters" not in t["function"]:
                    return unprocessable(f"tools.{i}.function.parameters", t["function"], "missing", "Field required")
        return super().validate(body)

    def answer_text(self, body: dict[str, Any], fault: Fault) -> str:
        text = fault.text if fault.text is not None else self.text
        last = body["messages"][-1]
        if last.get("role") == "assistant" and last.get("prefix"):
            self.prefills.append(last.get("content") or "")
            return (last.get("content") or "") + text  # Mistral's answer starts with the prefix
        return text

    async def stream(self, request: web.Request, fault: Fault, body: dict[str, Any], model: str, text: str,
                     n: int, usage: dict[str, Any], finish: str) -> web.StreamResponse:
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        base = {"id": "cmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        events = [sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})]
        for p in pieces[:-1]:
            events.append(sse({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}))
        last: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": {"content": pieces[-1]},
                                                     "finish_reason": finish}]}
        if fault.usage:
            last["usage"] = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": words(text),
                             "total_tokens": usage["prompt_tokens"] + words(text)}
        events.append(sse(last))
        events.append(b"data: [DONE]\n\n")
        return await self.stream_events(request, fault, events)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat), web.get("/v1/models", self.models)]
