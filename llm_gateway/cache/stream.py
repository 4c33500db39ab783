"""Streams and the cache, both ways.

``StreamRecorder`` watches the canonical chunks a live stream sends to the client and
assembles the ``chat.completion`` they add up to (per choice: role, content, refusal,
tool calls, logprobs, finish reason), so a completed stream is stored for later stream
and non-stream requests. What it cannot assemble faithfully (a delta field it does not
know) makes the recording unusable rather than wrong.

``replay_chunks`` turns a stored ``chat.completion`` back into a well-formed stream:
per choice a role chunk, one content chunk (or tool-call chunk), a finish chunk; then
the usage chunk when the client asked for one. The handler frames them and adds
``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..adapters.base import Chunk

_KNOWN_DELTA = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})


class _Choice:
    __slots__ = ("role", "content", "refusal", "tools", "function_call", "logprobs", "refusal_logprobs",
                 "finish_reason")

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.logprobs: list[Any] | None = None
        self.refusal_logprobs: list[Any] | None = None
        self.finish_reason: str | None = None


class StreamRecorder:
    """Feed every chunk sent to the client; ``response(usage)`` at the end."""

    __slots__ = ("_choices", "_meta", "broken")

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._meta: dict[str, Any] = {}
        self.broken = False

    def feed(self, chunk: Chunk) -> None:
        if self.broken:
            return
        try:
            c = orjson.loads(chunk) if isinstance(chunk, bytes | bytearray | memoryview) else chunk
            self._feed(c)
        except (ValueError, TypeError, AttributeError, KeyError):
            self.broken = True

    def _feed(self, c: dict[str, Any]) -> None:
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k not in self._meta and c.get(k) is not None:
                self._meta[k] = c[k]
        for ch in c.get("choices") or ():
            idx = int(ch.get("index") or 0)
            st = self._choices.get(idx)
            if st is None:
                st = self._choices[idx] = _Choice()
            d = ch.get("delta") or {}
            for k, v in d.items():
                if v is None:
                    continue
                if k not in _KNOWN_DELTA:
                    self.broken = True  # something we would drop: do not store a partial answer
                    return
            if d.get("role"):
                st.role = d["role"]
            if isinstance(d.get("content"), str):
                st.content.append(d["content"])
            if isinstance(d.get("refusal"), str):
                st.refusal.append(d["refusal"])
            for tc in d.get("tool_calls") or ():
                ti = int(tc.get("index") or 0)
                cur = st.tools.get(ti)
                if cur is None:
                    cur = st.tools[ti] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                if tc.get("id"):
                    cur["id"] = tc["id"]
                if tc.get("type"):
                    cur["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    cur["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    cur["function"]["arguments"] += fn["arguments"]
            fc = d.get("function_call")
            if fc:
                st.function_call = st.function_call or {"name": "", "arguments": ""}
                st.function_call["name"] += fc.get("name") or ""
                st.function_call["arguments"] += fc.get("arguments") or ""
            lp = ch.get("logprobs")
            if isinstance(lp, dict):
                if lp.get("content"):
                    st.logprobs = (st.logprobs or []) + list(lp["content"])
                if lp.get("refusal"):
                    st.refusal_logprobs = (st.refusal_logprobs or []) + list(lp["refusal"])
            if ch.get("finish_reason"):
                st.finish_reason = ch["finish_reason"]

    def response(self, usage: dict[str, Any] | None, model: str) -> dict[str, Any] | None:
        """The assembled ``chat.completion``; None when the stream cannot be stored."""
        if self.broken or not self._choices:
            return None
        choices = []
        for idx in sorted(self._choices):
            st = self._choices[idx]
            if st.finish_reason is None:
                return None
            msg: dict[str, Any] = {"role": st.role or "assistant"}
            text = "".join(st.content)
            msg["content"] = text if (text or not (st.tools or st.function_call)) else None
            if st.refusal:
                msg["refusal"] = "".join(st.refusal)
            if st.tools:
                msg["tool_calls"] = [st.tools[i] for i in sorted(st.tools)]
            if st.function_call:
                msg["function_call"] = st.function_call
            lp = None
            if st.logprobs is not None or st.refusal_logprobs is not None:
                lp = {"content": st.logprobs, "refusal": st.refusal_logprobs}
            choices.append({"index": idx, "message": msg, "logprobs": lp, "finish_reason": st.finish_reason})
        m = self._meta
        out: dict[str, Any] = {"id": m.get("id") or "chatcmpl-cached", "object": "chat.completion",
                               "created": m.get("created") or 0, "model": m.get("model") or model,
                               "choices": choices, "usage": usage}
        for k in ("system_fingerprint", "service_tier"):
            if k in m:
                out[k] = m[k]
        return out


def replay_chunks(response: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A stored ``chat.completion`` as the chunks of a well-formed stream (no [DONE])."""
    base = {"id": response.get("id") or "chatcmpl-cached", "object": "chat.completion.chunk",
            "created": response.get("created") or 0, "model": response.get("model")}
    if response.get("system_fingerprint"):
        base["system_fingerprint"] = response["system_fingerprint"]

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        c = dict(base)
        c["choices"] = choices
        if include_usage:  # as OpenAI: every chunk says usage null, the last one carries it
            c["usage"] = None
        return c

    out: list[dict[str, Any]] = []
    choices = response.get("choices") or []
    for ch in choices:
        i = ch.get("index", 0)
        msg = ch.get("message") or {}
        out.append(chunk([{"index": i, "delta": {"role": msg.get("role") or "assistant", "content": ""},
                           "logprobs": None, "finish_reason": None}]))
        delta: dict[str, Any] = {}
        if msg.get("content"):
            delta["content"] = msg["content"]
        if msg.get("refusal"):
            delta["refusal"] = msg["refusal"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": n, **tc} for n, tc in enumerate(msg["tool_calls"])]
        if msg.get("function_call"):
            delta["function_call"] = msg["function_call"]
        if delta or ch.get("logprobs"):
            out.append(chunk([{"index": i, "delta": delta, "logprobs": ch.get("logprobs"), "finish_reason": None}]))
        out.append(chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": ch.get("finish_reason")}]))
    if include_usage:
        u = chunk([])
        u["usage"] = response.get("usage")
        out.append(u)
    return out
