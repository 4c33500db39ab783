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
* Messages are checked field by field too (client-python ``UserMessage`` has ``role``
  and ``content`` only, ``AssistantMessage`` adds ``tool_calls`` and ``prefix``):
  ``developer`` is sent as ``system``; output-only fields an OpenAI answer carries when
  echoed back (``refusal``, ``annotations``, ``audio``, ``function_call``,
  ``reasoning_content``) are left out; any other field with a value is a 400 naming it.
  Tool-call ids must be 9 characters of ``[a-zA-Z0-9]``: others (OpenAI's ``call_...``,
  Anthropic's ``toolu_...``) are mapped, the same for a call and its result. OpenAI's
  ``input_audio`` and ``file`` parts have other shapes on Mistral and are refused; a
  replayed ``refusal`` part is sent as the text it is (Mistral has no such chunk).
* Mistral checks the order of roles where OpenAI does not: a ``user`` message straight
  after a ``tool`` result is refused ("Unexpected role 'user' after role 'tool'"), and an
  assistant message needs content or tool calls. Both shapes are common in agent
  histories (the user spoke before the model answered the tool results; an empty turn
  replayed), so such a turn is sent as an assistant message saying ``OK.`` (``BRIDGE``), what
  Zed, avante.nvim and others do for Mistral. The last message must be ``user``,
  ``tool`` or an assistant with ``prefix: true``: anything else is a 400 before the call.
* A function tool without ``parameters`` (optional in OpenAI's schema, required in
  Mistral's) is sent with an empty object schema.
* Answers: ``finish_reason`` ``model_length`` is OpenAI's ``length``; ``error`` means the
  generation failed and is a retryable upstream error, never a complete answer.
  ``content`` given as a list of chunks (text, thinking, references) is flattened to
  its text, as OpenAI clients expect a string.
* Errors: 422 ``{"object": "error", "message": {"detail": [{"loc": [...], "msg": ...}]}}``,
  401 ``{"message": "Unauthorized"}``, 429 with ``Retry-After`` when rate limited.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from .. import errors
from ..sse import SSEEvent
from .base import Chunk, StreamTranslator, reject_unsupported
from .openai import OpenAIAdapter, OpenAIStreamTranslator

_SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "seed",
    "random_seed", "tools", "tool_choice", "parallel_tool_calls", "response_format",
    "prediction", "safe_prompt", "metadata", "prompt_cache_key", "reasoning_effort",
})
#: client-python's ChatCompletionRequest: reasoning_effort "none" | "high"
_EFFORTS = frozenset({"none", "high"})


_MESSAGE_KEYS = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
#: what an OpenAI answer carries and clients echo back: never sent, never refused
_OUTPUT_ONLY = frozenset({"refusal", "annotations", "audio", "function_call", "reasoning_content"})
_REFUSED_PARTS = {"input_audio": "OpenAI's input_audio part", "file": "OpenAI's file part"}
#: the assistant turn sent where Mistral needs one the client did not send (see above)
BRIDGE = "OK."
_NO_PARAMETERS = {"type": "object", "properties": {}}
_TOOL_ID = re.compile(r"[a-zA-Z0-9]{9}")
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Mistral finish reasons OpenAI does not have
FINISH_REASONS = {"model_length": "length"}


def tool_id(value: Any) -> Any:
    """A tool-call id Mistral accepts (9 characters of [a-zA-Z0-9]); others are mapped by
    a hash, so a call and its result still match and two ids stay two."""
    if not isinstance(value, str) or _TOOL_ID.fullmatch(value):
        return value
    n = int.from_bytes(hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def flat_content(content: Any) -> Any:
    """Mistral's list-of-chunks content -> the text OpenAI clients expect (thinking and
    reference chunks are not the answer)."""
    if not isinstance(content, list):
        return content
    return "".join(c.get("text") or "" for c in content if isinstance(c, dict) and c.get("type") == "text")


def failed(reason: Any) -> errors.UpstreamBadResponse | None:
    if reason != "error":
        return None
    err = errors.UpstreamBadResponse("mistral stopped the answer with finish_reason 'error'", upstream_status=200)
    err.retryable = True
    return err


def _messages(msgs: Any) -> Any:
    if not isinstance(msgs, list):
        return msgs
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            out.append(m)
            continue
        role = "system" if m.get("role") == "developer" else m.get("role")
        allowed = _MESSAGE_KEYS.get(role)  # type: ignore[arg-type]
        msg: dict[str, Any] = {}
        for k, v in m.items():
            if k == "role":
                msg[k] = role
            elif allowed is None or k in allowed:
                msg[k] = v
            elif k in _OUTPUT_ONLY or v is None or v == "" or v == [] or v == {}:
                continue
            else:
                raise errors.UnsupportedParameter(f"'messages[{i}].{k}' is not supported by Mistral; remove it.",
                                                  param=f"messages[{i}].{k}")
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _REFUSED_PARTS:
                    raise errors.UnsupportedParameter(
                        f"{_REFUSED_PARTS[kind]} has another shape on Mistral and cannot be sent there.",
                        param=f"messages[{i}].content[{j}]")
            if any(isinstance(p, dict) and p.get("type") == "refusal" for p in content):
                msg["content"] = [{"type": "text", "text": str(p.get("refusal") or "")}
                                  if isinstance(p, dict) and p.get("type") == "refusal" else p for p in content]
        if isinstance(msg.get("tool_calls"), list):
            msg["tool_calls"] = [{**c, "id": tool_id(c.get("id"))} if isinstance(c, dict) else c
                                 for c in msg["tool_calls"]]
        if "tool_call_id" in msg:
            msg["tool_call_id"] = tool_id(msg["tool_call_id"])
        if role == "assistant" and not msg.get("tool_calls") and not msg.get("prefix") and _empty(msg.get("content")):
            # "must have either content or tool_calls": a replayed refusal keeps its words
            msg["content"] = str(m["refusal"]) if m.get("refusal") else BRIDGE
            msg.pop("tool_calls", None)
        elif role == "user" and out and isinstance(out[-1], dict) and out[-1].get("role") == "tool":
            out.append({"role": "assistant", "content": BRIDGE})  # "Unexpected role 'user' after role 'tool'"
        out.append(msg)
    last = out[-1] if out else None
    if isinstance(last, dict) and last.get("role") not in ("user", "tool") and not (
            last.get("role") == "assistant" and last.get("prefix")):
        raise errors.UnsupportedParameter(
            f"Mistral needs the last message to be a user or tool message, or an assistant message with "
            f"\"prefix\": true to have it continued; messages[{len(msgs) - 1}] is a {last.get('role')} message.",
            param=f"messages[{len(msgs) - 1}]")
    return out


def _empty(content: Any) -> bool:
    if content is None or content == "":
        return True
    return isinstance(content, list) and not any(
        isinstance(p, dict) and (p.get("type") != "text" or p.get("text")) for p in content)


def _tools(tools: Any) -> Any:
    """OpenAI's ``parameters`` is optional, Mistral's required: an empty object schema."""
    if not isinstance(tools, list):
        return tools
    return [{**t, "function": {**t["function"], "parameters": _NO_PARAMETERS}}
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("parameters") is None
            else t for t in tools]


class MistralAdapter(OpenAIAdapter):
    kind = "mistral"
    supports_prefill = True
    prefill_echoes_prefix = True
    path = "/v1/chat/completions"

    def translate(self, req: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
        reject_unsupported(req, _SUPPORTED, "Mistral")
        body = {k: v for k, v in req.items() if v is not None and k != "stream_options"}
        body["model"] = model
        body["messages"] = _messages(body.get("messages"))
        if "tools" in body:
            body["tools"] = _tools(body["tools"])
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in _EFFORTS:
            raise errors.UnsupportedParameter(
                f"reasoning_effort {effort!r} has no Mistral equivalent (Mistral takes none or high).",
                param="reasoning_effort")
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    def parse_response(self, body: bytes, model: str) -> dict[str, Any]:
        data = super().parse_response(body, model)
        for ch in data["choices"]:
            if not isinstance(ch, dict):
                continue
            if (err := failed(ch.get("finish_reason"))) is not None:
                err.provider, err.model = self.name, model
                raise err
            ch["finish_reason"] = FINISH_REASONS.get(ch.get("finish_reason"), ch.get("finish_reason"))
            msg = ch.get("message")
            if isinstance(msg, dict) and isinstance(msg.get("content"), list):
                msg["content"] = flat_content(msg["content"])
        return data

    def new_stream_translator(self, req: dict[str, Any], model: str) -> StreamTranslator:
        return MistralStreamTranslator(model=model, adapter=self)

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


class MistralStreamTranslator(OpenAIStreamTranslator):
    """OpenAI's translator, with Mistral's finish reasons and list content made OpenAI's
    (such a chunk is re-encoded; the others pass through as received)."""

    def feed_data(self, raw: bytes) -> list[Chunk]:
        if raw.find(b'"model_length"') < 0 and raw.find(b'"finish_reason":"error"') < 0 and \
                raw.find(b'"content":[') < 0 and raw.find(b'"finish_reason": "error"') < 0:
            return super().feed_data(raw)
        obj = orjson.loads(raw)
        if isinstance(obj, dict):
            for ch in obj.get("choices") or ():
                if not isinstance(ch, dict):
                    continue
                if (err := failed(ch.get("finish_reason"))) is not None:
                    raise err
                if ch.get("finish_reason") in FINISH_REASONS:
                    ch["finish_reason"] = FINISH_REASONS[ch["finish_reason"]]
                delta = ch.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), list):
                    delta["content"] = flat_content(delta["content"])
        return super().feed_data(orjson.dumps(obj))

    def feed(self, event: SSEEvent) -> list[Chunk]:
        return self.feed_data(event.raw if event.raw is not None else event.data.encode())
