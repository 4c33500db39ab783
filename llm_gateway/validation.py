"""Parse and validate the canonical chat-completions request at the edge.

One orjson parse, then cheap type/range checks with a 400 naming the field. Gateway
extension fields (``fallbacks``, ``task_type``, ``cache``) are taken out here so
nothing downstream can forward them to a vendor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from . import errors

EXTENSION_FIELDS = ("fallbacks", "task_type", "cache")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_DEPTH = 64


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]  # canonical, extension fields removed; ``model`` still as asked
    model: str
    stream: bool
    include_usage: bool
    fallbacks: list[str] | None
    task_type: str | None
    cache: bool | None


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise errors.InvalidJSON("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise errors.InvalidJSON(f"The request body is not valid JSON: {e.msg} (at position {e.pos}).") from None


def _depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values() if isinstance(v, dict | list))
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o if isinstance(v, dict | list))
    return True


def _num(body: dict[str, Any], name: str, lo: float, hi: float | None, integer: bool = False) -> None:
    v = body.get(name)
    if v is None:
        return
    ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
    if not ok_type or isinstance(v, bool):
        raise errors.BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}.", param=name,
                                code="invalid_type")
    if v < lo or (hi is not None and v > hi):
        rng = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
        raise errors.BadRequest(f"'{name}' must be {rng}; got {v}.", param=name, code="invalid_value")


def parse_chat(raw: bytes) -> ChatRequest:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.", code="invalid_type")
    if not _depth_ok(body, MAX_DEPTH):
        raise errors.BadRequest(f"The request JSON is nested deeper than {MAX_DEPTH} levels.", code="too_deep")
    model = body.get("model")
    if model is None:
        raise errors.BadRequest("Missing required parameter: 'model'.", param="model",
                                code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise errors.BadRequest("'model' must be a non-empty string.", param="model", code="invalid_type")
    msgs = body.get("messages")
    if msgs is None:
        raise errors.BadRequest("Missing required parameter: 'messages'.", param="messages",
                                code="missing_required_parameter")
    if not isinstance(msgs, list):
        raise errors.BadRequest("'messages' must be an array of message objects.", param="messages",
                                code="invalid_type")
    if not msgs:
        raise errors.BadRequest("'messages' must contain at least one message.", param="messages",
                                code="empty_array")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise errors.BadRequest(f"'messages[{i}]' must be an object.", param=f"messages[{i}]",
                                    code="invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise errors.BadRequest(
                f"'messages[{i}].role' must be one of {', '.join(sorted(ROLES))}; got {role!r}.",
                param=f"messages[{i}].role", code="invalid_value")
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            raise errors.BadRequest(f"'messages[{i}].content' must be a string or an array of parts.",
                                    param=f"messages[{i}].content", code="invalid_type")
        if c is None and role in ("user", "system", "developer") :
            raise errors.BadRequest(f"'messages[{i}].content' is required for role {role!r}.",
                                    param=f"messages[{i}].content", code="missing_required_parameter")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise errors.BadRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict):
            raise errors.BadRequest("'stream_options' must be an object.", param="stream_options",
                                    code="invalid_type")
        if not stream:
            raise errors.BadRequest("'stream_options' is only allowed when 'stream' is true.",
                                    param="stream_options", code="invalid_value")
        include_usage = bool(opts.get("include_usage"))
    _num(body, "temperature", 0, 2)
    _num(body, "top_p", 0, 1)
    _num(body, "n", 1, 128, integer=True)
    _num(body, "max_tokens", 1, None, integer=True)
    _num(body, "max_completion_tokens", 1, None, integer=True)
    _num(body, "presence_penalty", -2, 2)
    _num(body, "frequency_penalty", -2, 2)
    _num(body, "seed", -(2**63), 2**63 - 1, integer=True)
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise errors.BadRequest("'stop' must be a string or an array of up to 4 strings.", param="stop",
                                code="invalid_type")

    fallbacks = body.pop("fallbacks", None)
    if fallbacks is not None and not (isinstance(fallbacks, list) and all(isinstance(f, str) for f in fallbacks)):
        raise errors.BadRequest("'fallbacks' must be an array of model names.", param="fallbacks",
                                code="invalid_type")
    task_type = body.pop("task_type", None)
    if task_type is not None and not isinstance(task_type, str):
        raise errors.BadRequest("'task_type' must be a string.", param="task_type", code="invalid_type")
    cache = body.pop("cache", None)
    if cache is not None and not isinstance(cache, bool):
        raise errors.BadRequest("'cache' must be a boolean.", param="cache", code="invalid_type")
    return ChatRequest(body, model, stream, include_usage, fallbacks or None, task_type, cache)
