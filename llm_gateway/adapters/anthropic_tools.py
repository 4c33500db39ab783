"""Request-side conversion for the Anthropic adapter: OpenAI messages, content parts
and function tools -> Anthropic turns, content blocks, ``tools`` and ``tool_choice``.

Checked on 2026-11-26 against the anthropic SDK 2.14.0 param types (``message_param``,
``image_block_param`` with base64/url sources, ``tool_use_block_param``,
``tool_result_block_param``, ``tool_param`` incl. ``strict``, ``tool_choice_*_param``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from .. import errors

#: message keys understood. Any other key is refused unless empty (an assistant message
#: echoed back from an OpenAI SDK response carries ``audio: None``, ``function_call: None``);
#: ``annotations`` and ``reasoning_content`` are output-only and ignored.
_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "prefix", "refusal",
                           "annotations", "reasoning_content"})
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.S)
#: what Anthropic accepts as a ``tool_use`` id (``tool_use.id: String should match pattern``)
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")


def tool_id(value: Any) -> Any:
    """A tool-call id Anthropic accepts. OpenAI takes any string, and ids written by other
    vendors (``functions.get_weather:0``) or by the client reach us in replayed history;
    an id outside ``[a-zA-Z0-9_-]+`` becomes its allowed characters plus a short hash of
    the whole id, the same for the ``tool_use`` and its ``tool_result``, so pairs still
    match and two ids never collapse into one."""
    if not isinstance(value, str) or _TOOL_ID.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{_NOT_ID.sub('_', value)}_{digest}"


def _add_text(out: list[dict[str, Any]], text: str) -> None:
    """Append a text block. Anthropic refuses empty and whitespace-only text blocks: such
    text joins the previous text block of the message, or is left out when there is none
    (it carries nothing a model could read)."""
    if text.strip():
        out.append({"type": "text", "text": text})
    elif text and out and out[-1]["type"] == "text":
        out[-1]["text"] += text


def unsupported(message: str, param: str) -> errors.UnsupportedParameter:
    return errors.UnsupportedParameter(message, param=param)


def _text_of(content: Any, where: str) -> str:
    """Text-only content (system, tool results): a string or a list of text parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise unsupported(f"{where}: only text parts are supported here by Anthropic.", f"{where}[{j}]")
            out.append(str(part.get("text", "")))
        return "".join(out)
    raise errors.BadRequest(f"{where} must be a string or a list of content parts.", param=where)


#: the image media types the Messages API takes (``image/jpg``, a common misspelling, is JPEG)
_IMAGE_TYPES = {"image/jpeg": "image/jpeg", "image/jpg": "image/jpeg", "image/png": "image/png",
                "image/gif": "image/gif", "image/webp": "image/webp"}


def _image(url: str, where: str) -> dict[str, Any]:
    m = _DATA_URL.match(url)
    if m:
        media = _IMAGE_TYPES.get(m.group(1).lower())
        if media is None:
            raise unsupported(f"{where}: Anthropic takes JPEG, PNG, GIF and WebP images, not {m.group(1)}.", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": m.group(2)}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise errors.BadRequest(f"{where}: image_url must be an http(s) URL or a base64 data: URL.", param=where)


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """User/assistant content -> Anthropic content blocks (empty and whitespace-only text
    is left out or joins the text before it: see ``_add_text``)."""
    if content is None:
        return []
    out: list[dict[str, Any]] = []
    if isinstance(content, str):
        _add_text(out, content)
        return out
    if not isinstance(content, list):
        raise errors.BadRequest(f"{where} must be a string or a list of content parts.", param=where)
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if text:
                _add_text(out, str(text))
        elif kind == "image_url":
            img = part.get("image_url")
            url = img.get("url") if isinstance(img, dict) else img
            out.append(_image(str(url or ""), f"{where}[{j}].image_url"))
        else:
            raise unsupported(f"content part type {kind!r} is not supported by Anthropic.", f"{where}[{j}].type")
    return out


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or call.get("type", "function") != "function":
        raise unsupported("only function tool calls are supported by Anthropic.", where)
    raw = fn.get("arguments")
    try:
        args = raw if isinstance(raw, dict) else orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise errors.BadRequest(f"{where}.function.arguments is not valid JSON.",
                                param=f"{where}.function.arguments") from None
    if not isinstance(args, dict):
        raise errors.BadRequest(f"{where}.function.arguments must be a JSON object.",
                                param=f"{where}.function.arguments")
    return {"type": "tool_use", "id": tool_id(call.get("id")), "name": fn.get("name"), "input": args}


def convert_messages(msgs: Any, *, prefill_ok: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI messages -> (system texts, Anthropic turns with merged roles)."""
    if not isinstance(msgs, list) or not msgs:
        raise errors.BadRequest("'messages' must be a non-empty array.", param="messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise errors.BadRequest(f"{where} must be an object.", param=where)
        for k, v in m.items():
            if k not in _MESSAGE_KEYS and v not in (None, [], ""):
                raise unsupported(f"'{where}.{k}' is not supported by Anthropic; remove it.", f"{where}.{k}")
        role = m.get("role")
        if m.get("prefix") and (role != "assistant" or i != last):
            raise errors.BadRequest("'prefix' is only allowed on the final assistant message.",
                                    param=f"{where}.prefix")
        if m.get("prefix") and not prefill_ok:
            raise unsupported("assistant prefill ('prefix': true) is not enabled for this provider.", f"{where}.prefix")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), f"{where}.content"))
            continue
        if role == "tool":
            if not m.get("tool_call_id"):
                raise errors.BadRequest(f"'{where}.tool_call_id' is required.", param=f"{where}.tool_call_id")
            role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": tool_id(m.get("tool_call_id")),
                       "content": _text_of(m.get("content"), f"{where}.content")}]
        elif role in ("user", "assistant"):
            blocks = _blocks(m.get("content"), f"{where}.content")
            if role == "assistant":
                if not blocks and m.get("refusal"):  # a replayed refusal keeps its text
                    blocks = [{"type": "text", "text": str(m["refusal"])}]
                calls = m.get("tool_calls") or []
                if not isinstance(calls, list):
                    raise errors.BadRequest(f"'{where}.tool_calls' must be an array.", param=f"{where}.tool_calls")
                blocks += [_tool_use(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        else:
            raise errors.BadRequest(f"'{where}.role' {role!r} is not a chat role.", param=f"{where}.role")
        if not blocks:
            continue  # an empty message: Anthropic refuses it, and it says nothing
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[-1]["role"] == "assistant":  # prefill: no trailing whitespace allowed
        blocks = turns[-1]["content"]
        if blocks and blocks[-1]["type"] == "text":
            blocks[-1]["text"] = blocks[-1]["text"].rstrip()
            if not blocks[-1]["text"]:
                blocks.pop()
        if not blocks:
            turns.pop()
    for t in turns:  # a lone text block goes out in the short string form
        if len(t["content"]) == 1 and t["content"][0]["type"] == "text":
            t["content"] = t["content"][0]["text"]
    return system, turns


def convert_tools(req: dict[str, Any], body: dict[str, Any]) -> None:
    tools = req.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise errors.BadRequest("'tools' must be an array.", param="tools")
    if tools is not None:
        out = []
        for j, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or t.get("type", "function") != "function":
                raise unsupported("only function tools are supported by Anthropic.", f"tools[{j}].type")
            schema = fn.get("parameters") or {"type": "object", "properties": {}}
            tool = {"name": fn.get("name"), "input_schema": schema}
            if fn.get("description"):
                tool["description"] = fn["description"]
            if fn.get("strict") is not None:
                tool["strict"] = bool(fn["strict"])
            out.append(tool)
        body["tools"] = out
    choice = req.get("tool_choice")
    tc: dict[str, Any] | None = None
    if choice in ("auto", "none"):
        tc = {"type": choice}
    elif choice == "required":
        tc = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        tc = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice is not None:
        raise unsupported(f"tool_choice {choice!r} is not supported by Anthropic.", "tool_choice")
    if req.get("parallel_tool_calls") is False and (tc or {}).get("type") != "none":
        tc = tc or {"type": "auto"}
        tc["disable_parallel_tool_use"] = True
    if tc is not None:
        body["tool_choice"] = tc
    if tools is None:
        _tools_for_history(body)


def _tools_for_history(body: dict[str, Any]) -> None:
    """Anthropic refuses ``tool_use``/``tool_result`` blocks in a request that defines no
    tools ("Requests which include `tool_use` or `tool_result` blocks must define tools"),
    while OpenAI takes replayed tool calls without ``tools`` (a follow-up turn that only
    asks for a summary). The tools named in the history are declared with an open schema
    and ``tool_choice: none``: the model reads the history as it was and, as on OpenAI
    without tools, cannot call one."""
    names: dict[str, None] = {}
    results = False
    for turn in body["messages"]:
        content = turn["content"]
        if isinstance(content, list):
            for block in content:
                if block["type"] == "tool_use" and isinstance(block.get("name"), str):
                    names[block["name"]] = None
                results = results or block["type"] == "tool_result"
    if not names and not results:
        return
    if not names:
        raise errors.BadRequest("A 'tool' message answers a tool call that is not in 'messages'; Anthropic "
                                "needs the assistant message with that tool call, or 'tools'.", param="messages")
    body["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in names]
    body["tool_choice"] = {"type": "none"}
