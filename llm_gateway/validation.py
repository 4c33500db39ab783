"""Parse and validate the canonical chat-completions request at the edge.

One orjson parse, then cheap type/range checks with a 400 naming the field. Gateway
extension fields (``fallbacks``, ``task_type``, ``cache``) are taken out here so
nothing downstream can forward them to a vendor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from . import errors

EXTENSION_FIELDS = ("fallbacks", "task_type", "cache", "tenant")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_DEPTH = 64
#: sanity bounds (the body size limit, MAX_REQUEST_BYTES, bounds everything else)
MAX_MESSAGES = 10_000
MAX_TOOLS = 128  # OpenAI's own limit
MAX_FALLBACKS = 16  # each fallback may be retried: bound the fan-out of one request
MAX_MODEL_CHARS = 256
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]  # canonical, extension fields removed; ``model`` still as asked
    model: str
    stream: bool
    include_usage: bool
    fallbacks: list[str] | None
    task_type: str | None
    cache: bool | None
    tenant: str | None = None  # as the body named it; whether it counts is the handler's to say


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


def _bad(param: str, msg: str, code: str = "invalid_type") -> errors.BadRequest:
    return errors.BadRequest(f"'{param}' {msg}", param=param, code=code)


def _check_message(i: int, m: dict[str, Any], role: str) -> None:
    """Shapes inside one message: parts, name, tool calls and tool results."""
    where = f"messages[{i}]"
    c = m.get("content")
    if isinstance(c, list):
        for j, part in enumerate(c):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}.content[{j}]", "must be an object with a string 'type'.")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{j}].text", "must be a string.")
    if m.get("name") is not None and not isinstance(m["name"], str):
        raise _bad(f"{where}.name", "must be a string.")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise _bad(f"{where}.tool_call_id", "is required for role 'tool' and must be a string.",
                   "missing_required_parameter" if m.get("tool_call_id") is None else "invalid_type")
    calls = m.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls", "must be an array of tool calls.")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise _bad(f"{where}.tool_calls[{j}].function", "must be an object with 'name' and 'arguments'.")
        if not isinstance(fn.get("name"), str):
            raise _bad(f"{where}.tool_calls[{j}].function.name", "must be a string.")
        if fn.get("arguments") is not None and not isinstance(fn["arguments"], str):
            raise _bad(f"{where}.tool_calls[{j}].function.arguments", "must be a string (JSON text).")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise _bad(f"{where}.tool_calls[{j}].id", "must be a string.")


def _check_tools(body: dict[str, Any]) -> None:
    """tools, tool_choice and response_format: types strict, enum values left to the vendor
    (OpenAI keeps adding kinds; an adapter refuses what its vendor cannot take)."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", "must be an array of tool objects.")
        if len(tools) > MAX_TOOLS:
            raise _bad("tools", f"may hold at most {MAX_TOOLS} tools; got {len(tools)}.", "array_too_long")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("type"), str):
                raise _bad(f"tools[{i}]", "must be an object with a string 'type' (e.g. \"function\").")
            if t["type"] != "function":
                continue
            fn = t.get("function")
            if not isinstance(fn, dict):
                raise _bad(f"tools[{i}].function", "must be an object.")
            name = fn.get("name")
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise _bad(f"tools[{i}].function.name", "must be 1 to 64 letters, digits, '_' or '-'.",
                           "invalid_value" if isinstance(name, str) else "invalid_type")
            if fn.get("description") is not None and not isinstance(fn["description"], str):
                raise _bad(f"tools[{i}].function.description", "must be a string.")
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                raise _bad(f"tools[{i}].function.parameters", "must be a JSON Schema object.")
            if fn.get("strict") is not None and not isinstance(fn["strict"], bool):
                raise _bad(f"tools[{i}].function.strict", "must be a boolean.")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str):
        if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
            raise _bad("tool_choice", "must be \"none\", \"auto\", \"required\" or an object with a 'type'.")
        fn = choice.get("function")
        if choice["type"] == "function" and not (isinstance(fn, dict) and isinstance(fn.get("name"), str)):
            raise _bad("tool_choice.function.name", "must name the function to call.")
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
            raise _bad("response_format", "must be an object with a string 'type' (text, json_object, json_schema).")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise _bad("response_format.json_schema", "is required for type 'json_schema' and must be an object.")
            if not isinstance(js.get("name"), str) or not _NAME_RE.fullmatch(js["name"]):
                raise _bad("response_format.json_schema.name", "must be 1 to 64 letters, digits, '_' or '-'.")
            if js.get("schema") is not None and not isinstance(js["schema"], dict):
                raise _bad("response_format.json_schema.schema", "must be a JSON Schema object.")


def _check_scalars(body: dict[str, Any]) -> None:
    for name in ("parallel_tool_calls", "logprobs", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _bad(name, "must be a boolean.")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("user", "must be a string.")
    _num(body, "top_logprobs", 0, 20, integer=True)
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise _bad("logit_bias", "must be an object mapping token ids to numbers.")
        for k, v in bias.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or not -100 <= v <= 100:
                raise _bad(f"logit_bias.{k}", "must be a number between -100 and 100.", "invalid_value")
    meta = body.get("metadata")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _bad("metadata", "must be an object of string values.")


#: numeric parameters: (lowest, highest or None, integer only)
_NUMBERS: dict[str, tuple[float, float | None, bool]] = {
    "temperature": (0, 2, False), "top_p": (0, 1, False), "n": (1, 128, True), "max_tokens": (1, None, True),
    "max_completion_tokens": (1, None, True), "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False), "seed": (-(2**63), 2**63 - 1, True),
}
#: the fields _check_tools and _check_scalars look at: neither runs when none is present
_TOOL_FIELDS = frozenset({"tools", "tool_choice", "response_format"})
_SCALAR_FIELDS = frozenset({"parallel_tool_calls", "logprobs", "store", "user", "top_logprobs", "logit_bias",
                            "metadata"})


def parse_chat(raw: bytes) -> ChatRequest:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object.", code="invalid_type")
    # Fewer brackets than the limit cannot nest deeper than it: skip the walk (hot path).
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not _depth_ok(body, MAX_DEPTH):
        raise errors.BadRequest(f"The request JSON is nested deeper than {MAX_DEPTH} levels.", code="too_deep")
    model = body.get("model")
    if model is None:
        raise errors.BadRequest("Missing required parameter: 'model'.", param="model",
                                code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise errors.BadRequest("'model' must be a non-empty string.", param="model", code="invalid_type")
    if len(model) > MAX_MODEL_CHARS:
        raise errors.BadRequest(f"'model' is longer than {MAX_MODEL_CHARS} characters.", param="model",
                                code="invalid_value")
    if not model.isprintable():  # it is echoed in X-Gateway-Model, logged and stored in the ledger
        raise errors.BadRequest("'model' must be printable text (no control characters).", param="model",
                                code="invalid_value")
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
    if len(msgs) > MAX_MESSAGES:
        raise errors.BadRequest(f"'messages' may hold at most {MAX_MESSAGES} messages; got {len(msgs)}.",
                                param="messages", code="array_too_long")
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
        _check_message(i, m, role)
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
    keys = body.keys()
    if not keys.isdisjoint(_NUMBERS):  # only the fields present are checked (hot path)
        for name, (lo, hi, integer) in _NUMBERS.items():
            if name in body:
                _num(body, name, lo, hi, integer)
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise errors.BadRequest("'stop' must be a string or an array of up to 4 strings.", param="stop",
                                code="invalid_type")

    if not keys.isdisjoint(_TOOL_FIELDS):
        _check_tools(body)
    if not keys.isdisjoint(_SCALAR_FIELDS):
        _check_scalars(body)

    fallbacks = body.pop("fallbacks", None)
    if fallbacks is not None and not (isinstance(fallbacks, list) and all(isinstance(f, str) for f in fallbacks)):
        raise errors.BadRequest("'fallbacks' must be an array of model names.", param="fallbacks",
                                code="invalid_type")
    if fallbacks is not None and len(fallbacks) > MAX_FALLBACKS:
        raise errors.BadRequest(f"'fallbacks' may name at most {MAX_FALLBACKS} models; got {len(fallbacks)}.",
                                param="fallbacks", code="array_too_long")
    task_type = body.pop("task_type", None)
    if task_type is not None and not isinstance(task_type, str):
        raise errors.BadRequest("'task_type' must be a string.", param="task_type", code="invalid_type")
    cache = body.pop("cache", None)
    if cache is not None and not isinstance(cache, bool):
        raise errors.BadRequest("'cache' must be a boolean.", param="cache", code="invalid_type")
    tenant = body.pop("tenant", None)
    if tenant is not None and not isinstance(tenant, str):
        raise errors.BadRequest("'tenant' must be a string.", param="tenant", code="invalid_type")
    return ChatRequest(body, model, stream, include_usage, fallbacks or None, task_type, cache, tenant)
