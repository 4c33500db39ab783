"""The built-in ``mock`` provider: deterministic, offline, clearly labelled as simulated.

It speaks OpenAI's wire format through an in-process transport (no socket), so the
whole gateway — routing, streaming, usage, cost, logs — works on a fresh machine
with no vendor key. Every answer says it is simulated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from ..tokens import estimate_request_tokens, estimate_tokens
from .base import UpstreamRequest, UpstreamResponse
from .openai import OpenAIAdapter

LABEL = "[simulated response from the llm-gateway mock provider; no model was called]"


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def answer_for(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(text, usage, finish_reason) — a pure function of the request."""
    said = " ".join(_last_user_text(body.get("messages") or []).split())
    echo = said if len(said) <= 200 else said[:200] + "…"
    text = f"{LABEL} You said: {echo}" if echo else LABEL
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    words = text.split(" ")
    if isinstance(limit, int) and limit < len(words):
        text, finish = " ".join(words[:limit]), "length"
    pt = estimate_request_tokens(body)
    ct = estimate_tokens(text)
    usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    return text, usage, finish


class _MockStream:
    status = 200
    headers: Mapping[str, str] = {"Content-Type": "text/event-stream"}

    def __init__(self, events: list[bytes]) -> None:
        self._events = events
        self._next = 0

    async def next_chunk(self) -> bytes:
        if self._next >= len(self._events):
            return b""
        await asyncio.sleep(0)  # one event per loop iteration, as a network would deliver them
        self._next += 1
        return self._events[self._next - 1]

    async def read(self) -> bytes:
        return b"".join(self._events)

    def close(self, complete: bool = False) -> None:
        pass


class MockTransport:
    """Answers the OpenAI-shaped requests the mock adapter builds, in process."""

    async def send(self, req: UpstreamRequest, timeout: float) -> UpstreamResponse:
        body = orjson.loads(req.body)
        text, usage, finish = answer_for(body)
        n = int(body.get("n") or 1)
        resp = {
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish} for i in range(n)],
            "usage": usage, "system_fingerprint": "mock",
        }
        return UpstreamResponse(200, {"Content-Type": "application/json"}, orjson.dumps(resp))

    async def open_stream(self, req: UpstreamRequest, timeout: float) -> _MockStream:
        body = orjson.loads(req.body)
        text, usage, finish = answer_for(body)
        model = body["model"]
        n = int(body.get("n") or 1)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(i: int, delta: dict[str, Any], fin: str | None) -> bytes:
            c: dict[str, Any] = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                                 "model": model,
                                 "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": fin}]}
            if include_usage:  # as OpenAI: usage null on every chunk, the numbers in the last
                c["usage"] = None
            return b"data: " + orjson.dumps(c) + b"\n\n"

        words = text.split(" ")
        events = []
        for i in range(n):  # the choices one after another (OpenAI interleaves; both are valid)
            events.append(chunk(i, {"role": "assistant", "content": ""}, None))
            events += [chunk(i, {"content": w if j == 0 else " " + w}, None) for j, w in enumerate(words)]
            events.append(chunk(i, {}, finish))
        if include_usage:
            u = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [], "usage": usage}
            events.append(b"data: " + orjson.dumps(u) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return _MockStream(events)


class MockAdapter(OpenAIAdapter):
    kind = "mock"
    transport = MockTransport()
