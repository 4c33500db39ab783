"""Canonical (OpenAI chat) request → Gemini ``GenerateContentRequest`` body.

Pure functions used by ``adapters/gemini.py``; see that module's docstring for what
was checked against and when. Every canonical field is either translated or refused
with ``UnsupportedParameter`` naming it (``param``): nothing is dropped silently.
Deliberate exceptions, all without meaning for Gemini: ``stream``/``stream_options``
(the URL says stream; the gateway owns usage chunks), ``logprobs: false``,
``parallel_tool_calls: true``, ``modalities: ["text"]``, image ``detail: "auto"``, a
function tool's ``strict`` (Gemini has no per-function switch; SDKs send it by
default), and assistant ``annotations`` / ``reasoning_content`` (output metadata of an
earlier answer). ``user`` is refused: Gemini takes no end-user id.

Mapping notes: system and developer messages all go to ``systemInstruction`` (in
order); tool results become ``functionResponse`` parts (a JSON-object result is sent
as is, anything else as ``{"output": text}``) in a user turn of their own; image
``detail`` low/high becomes the request-wide ``mediaResolution``;
``reasoning_effort`` becomes ``thinkingBudget`` on Gemini 2.x and ``thinkingLevel``
on later models.

Wire shape produced (camelCase, as the REST reference and the google-genai SDK's
``_GenerateContentConfig_to_mldev`` converter write it)::

    {"contents": [{"role": "user"|"model", "parts": [...]}],
     "systemInstruction": {"parts": [{"text": ...}]},
     "generationConfig": {...}, "tools": [{"functionDeclarations": [...]}],
     "toolConfig": {"functionCallingConfig": {"mode": ..., "allowedFunctionNames": [...]}}}
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import BadRequest, UnsupportedParameter

#: canonical fields this adapter translates (values are checked further below)
SUPPORTED = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "seed",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    "logprobs", "modalities",
})

#: Gemini 3 requires the thoughtSignature it returned on a functionCall part to come
#: back in the history; when the client lost it we send Google's documented sentinel.
SKIP_SIGNATURE = "skip_thought_signature_validator"

_THINKING_BUDGETS_2X = {"none": 0, "low": 1024, "medium": 8192, "high": 24576}
#: Gemini's ThinkingLevel enum has MINIMAL, LOW, MEDIUM and HIGH (no XHIGH)
_THINKING_LEVELS = frozenset({"minimal", "low", "medium", "high"})
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg",
               "aac": "audio/aac", "aiff": "audio/aiff"}
_MEDIA_RESOLUTION = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH"}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*?);base64,(.*)$", re.S)
_GEN_MAJOR = re.compile(r"^(?:models/)?gemini-(\d+)")


def _unsupported(param: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"'{param}' {why}", param=param)


def gemini_major(model: str) -> int | None:
    """2 for ``gemini-2.5-flash``; None for aliases such as ``gemini-flash-latest``."""
    m = _GEN_MAJOR.match(model)
    return int(m.group(1)) if m else None


def build_body(req: dict[str, Any], model: str, *, allow_prefill: bool, call_ids: bool = True) -> dict[str, Any]:
    """``call_ids``: tool-call ids go back in ``functionCall.id`` / ``functionResponse.id``
    (v1beta has both fields: "the client to execute the function_call and return the
    response with the matching id"; v1 has neither)."""
    _check_fields(req)
    state = _Messages(model, allow_prefill, call_ids)
    system, contents = state.translate(req.get("messages") or [])
    if not contents:
        raise BadRequest("Gemini needs at least one user or assistant message besides system messages.",
                         param="messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    gen = _generation_config(req, model)
    if state.media_resolution:
        gen["mediaResolution"] = state.media_resolution
    if gen:
        body["generationConfig"] = gen
    tools, tool_config = _tools(req)
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    return body


# ------------------------------------------------------------------ top-level fields
def _check_fields(req: dict[str, Any]) -> None:
    if req.get("user") is not None:
        raise _unsupported("user", "has no Gemini equivalent (Gemini takes no end-user id); "
                                   "remove it or choose another model.")
    for key, value in req.items():
        if key not in SUPPORTED and value is not None:
            raise _unsupported(key, "is not supported by Gemini; remove it or choose another model.")
    if req.get("logprobs"):
        raise _unsupported("logprobs", "is not supported by the Gemini adapter.")
    if req.get("parallel_tool_calls") is False:
        raise _unsupported("parallel_tool_calls", "= false cannot be enforced by Gemini "
                                                  "(it may always call several functions at once).")
    mods = req.get("modalities")
    if mods is not None and list(mods) != ["text"]:
        raise _unsupported("modalities", "other than [\"text\"] is not supported by the Gemini adapter.")


def _generation_config(req: dict[str, Any], model: str) -> dict[str, Any]:
    g: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
                     ("n", "candidateCount")):
        if req.get(src) is not None:
            g[dst] = req[src]
    max_out = req.get("max_completion_tokens")
    if max_out is None:
        max_out = req.get("max_tokens")
    if max_out is not None:
        g["maxOutputTokens"] = max_out
    stop = req.get("stop")
    if stop is not None:
        g["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    rf = req.get("response_format")
    if rf is not None:
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "json_object":
            g["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise BadRequest("'response_format.json_schema.schema' must be a JSON schema object.",
                                 param="response_format.json_schema.schema")
            g["responseMimeType"] = "application/json"
            g["responseJsonSchema"] = schema
        elif kind != "text":
            raise _unsupported("response_format", f"type {kind!r} is not supported by Gemini.")
    effort = req.get("reasoning_effort")
    if effort is not None:
        g["thinkingConfig"] = _thinking(str(effort), model)
    return g


def _thinking(effort: str, model: str) -> dict[str, Any]:
    """Gemini 2.x takes a token budget; Gemini 3+ (and unversioned aliases) a level."""
    if (gemini_major(model) or 99) <= 2:
        if effort not in _THINKING_BUDGETS_2X:
            raise _unsupported("reasoning_effort", f"{effort!r} has no Gemini 2 thinking budget "
                                                   "(use none, low, medium or high).")
        if effort == "none" and "-pro" in model:
            raise _unsupported("reasoning_effort", f"'none': {model} only works in thinking mode (Gemini refuses "
                                                   "a thinking budget of 0); use low, medium or high.")
        return {"thinkingBudget": _THINKING_BUDGETS_2X[effort]}
    if effort not in _THINKING_LEVELS:
        raise _unsupported("reasoning_effort", f"{effort!r} has no Gemini thinking level "
                                               "(use minimal, low, medium or high).")
    return {"thinkingLevel": effort.upper()}


def _tools(req: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tools = req.get("tools") or []
    decls = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise _unsupported(f"tools[{i}].type", "must be 'function': Gemini's built-in tools "
                                                   "are not reachable through this API.")
        f = t.get("function") or {}
        if not f.get("name"):
            raise BadRequest(f"'tools[{i}].function.name' is required.", param=f"tools[{i}].function.name")
        decl: dict[str, Any] = {"name": f["name"]}
        if f.get("description"):
            decl["description"] = f["description"]
        if f.get("parameters"):
            decl["parametersJsonSchema"] = f["parameters"]
        decls.append(decl)
    choice = req.get("tool_choice")
    if choice is None:
        return ([{"functionDeclarations": decls}] if decls else []), None
    if not decls:
        if choice in ("none", "auto"):
            return [], None
        raise BadRequest("'tool_choice' needs 'tools'.", param="tool_choice")
    cfg: dict[str, Any]
    if choice in ("auto", "none", "required"):
        cfg = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise BadRequest("'tool_choice.function.name' is required.", param="tool_choice.function.name")
        cfg = {"mode": "ANY", "allowedFunctionNames": [name]}
    else:
        raise _unsupported("tool_choice", "must be 'auto', 'none', 'required' or a named function "
                                          "for Gemini.")
    return [{"functionDeclarations": decls}], {"functionCallingConfig": cfg}


# ------------------------------------------------------------------ messages
_MSG_KEYS = {
    "system": {"role", "content"}, "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix", "refusal", "annotations",
                  "function_call", "reasoning_content"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


class _Messages:
    """One pass over the messages; remembers tool-call names for later tool results."""

    def __init__(self, model: str, allow_prefill: bool, call_ids: bool = True) -> None:
        self.model = model
        self.allow_prefill = allow_prefill
        self.call_ids = call_ids
        self.tool_names: dict[str, str] = {}
        #: tool-call id -> the call's position in the history, and a result part -> its call's
        #: position: Gemini pairs results with calls by order (OpenAI by id, in any order)
        self.call_order: dict[str, int] = {}
        self.result_order: dict[int, int] = {}
        self.details: set[str] = set()
        self.media_resolution: str | None = None

    def translate(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        system: list[dict[str, Any]] = []
        contents: list[dict[str, Any]] = []
        last = len(messages) - 1
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in _MSG_KEYS:
                raise _unsupported(f"messages[{i}].role", f"{role!r} is not supported by Gemini.")
            for k, v in m.items():
                if k not in _MSG_KEYS[role] and v not in (None, "", [], {}):
                    raise _unsupported(f"messages[{i}].{k}", "has no Gemini equivalent; remove it.")
            if role == "assistant" and m.get("function_call"):
                raise _unsupported(f"messages[{i}].function_call", "is the deprecated form; use tool_calls.")
            if role in ("system", "developer"):
                system.extend(self._parts(m.get("content"), i, text_only=True))
                continue
            if role == "user":
                _append(contents, "user", self._parts(m.get("content"), i))
            elif role == "assistant":
                if m.get("prefix") and not (i == last and self.allow_prefill):
                    raise _unsupported(f"messages[{i}].prefix", "(assistant prefill) is not supported "
                                                                "by this Gemini provider.")
                parts = self._parts(m.get("content"), i, text_only=True)
                if not parts and m.get("refusal"):
                    parts = [{"text": str(m["refusal"])}]
                parts += self._calls(m.get("tool_calls") or [], i)
                _append(contents, "model", parts)
            else:
                _append(contents, "user", [self._result(m, i)], function_results=True)
        if self.result_order:  # results in the order of their calls (a stable sort)
            for c in contents:
                if c["role"] == "user" and len(c["parts"]) > 1 and _is_results(c):
                    c["parts"].sort(key=lambda p: self.result_order.get(id(p), len(self.call_order)))
        return system, contents

    def _parts(self, content: Any, i: int, *, text_only: bool = False) -> list[dict[str, Any]]:
        if content is None:
            return []
        if isinstance(content, str):
            return [{"text": content}] if content else []
        if not isinstance(content, list):
            raise BadRequest(f"'messages[{i}].content' must be a string or a list of parts.",
                             param=f"messages[{i}].content")
        out = []
        for j, p in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = p.get("type") if isinstance(p, dict) else None
            if kind in ("text", "refusal"):
                text = p.get(kind) or ""
                if text:
                    out.append({"text": text})
            elif text_only:
                raise _unsupported(f"{where}.type", f"{kind!r} is not allowed in this message for Gemini.")
            elif kind == "image_url":
                out.append(self._image(p.get("image_url"), where))
            elif kind == "input_audio":
                a = p.get("input_audio") or {}
                mime = _AUDIO_MIME.get(str(a.get("format", "")).lower())
                if not mime or not a.get("data"):
                    raise _unsupported(f"{where}.input_audio.format", "must be one of "
                                       f"{', '.join(_AUDIO_MIME)} with base64 data for Gemini.")
                out.append({"inlineData": {"mimeType": mime, "data": a["data"]}})
            elif kind == "file":
                out.append(_file(p.get("file") or {}, where))
            else:
                raise _unsupported(f"{where}.type", f"{kind!r} is not supported by Gemini.")
        return out

    def _image(self, img: Any, where: str) -> dict[str, Any]:
        if isinstance(img, str):
            img = {"url": img}
        url = str((img or {}).get("url") or "")
        detail = (img or {}).get("detail")
        if detail not in (None, "auto"):
            res = _MEDIA_RESOLUTION.get(detail)
            if res is None or (self.media_resolution not in (None, res)):
                raise _unsupported(f"{where}.image_url.detail", "must be auto, low or high, and the same "
                                   "for every image (Gemini sets one media resolution per request).")
            self.media_resolution = res
        if url.startswith("data:"):
            return {"inlineData": _data_url(url, f"{where}.image_url.url")}
        if urlsplit(url).scheme in ("http", "https", "gs"):
            fd = {"fileUri": url}
            mime = mimetypes.guess_type(urlsplit(url).path)[0]
            if mime:
                fd["mimeType"] = mime
            return {"fileData": fd}
        raise _unsupported(f"{where}.image_url.url", "must be a data: URL or an http(s) URL for Gemini.")

    def _calls(self, calls: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
        out = []
        for j, c in enumerate(calls):
            where = f"messages[{i}].tool_calls[{j}]"
            f = (c.get("function") if isinstance(c, dict) else None) or {}
            if not f.get("name") or c.get("type", "function") != "function":
                raise BadRequest(f"'{where}' must be a function call with a name.", param=where)
            try:
                args = orjson.loads(f.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                args = None
            if not isinstance(args, dict):
                raise BadRequest(f"'{where}.function.arguments' must be a JSON object string.",
                                 param=f"{where}.function.arguments")
            if c.get("id"):
                self.tool_names[c["id"]] = f["name"]
                self.call_order.setdefault(c["id"], len(self.call_order))
            part: dict[str, Any] = {"functionCall": {"name": f["name"], "args": args}}
            if self.call_ids and isinstance(c.get("id"), str) and c["id"]:
                part["functionCall"]["id"] = c["id"]
            sig = ((c.get("extra_content") or {}).get("google") or {}).get("thought_signature")
            if sig:
                part["thoughtSignature"] = sig
            elif j == 0 and (gemini_major(self.model) or 99) >= 3:
                part["thoughtSignature"] = SKIP_SIGNATURE
            out.append(part)
        return out

    def _result(self, m: dict[str, Any], i: int) -> dict[str, Any]:
        call_id = m.get("tool_call_id")
        name = self.tool_names.get(call_id or "") or m.get("name")
        if not name:
            raise BadRequest(f"'messages[{i}].tool_call_id' ({call_id!r}) matches no earlier assistant "
                             "tool_call; Gemini needs the function's name.", param=f"messages[{i}].tool_call_id")
        text = "".join(p["text"] for p in self._parts(m.get("content"), i, text_only=True))
        try:
            value = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            value = None
        response = value if isinstance(value, dict) else {"output": text}
        part: dict[str, Any] = {"functionResponse": {"name": name, "response": response}}
        if self.call_ids and isinstance(call_id, str) and call_id in self.tool_names:
            part["functionResponse"]["id"] = call_id
        if call_id in self.call_order:
            self.result_order[id(part)] = self.call_order[call_id]
        return part


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]],
            function_results: bool = False) -> None:
    """Merge into the previous turn of the same role; function results never share a
    turn with text (Gemini/Vertex refuse a user turn mixing the two)."""
    if not parts:
        return
    prev = contents[-1] if contents else None
    if prev is not None and prev["role"] == role and _is_results(prev) == function_results:
        prev["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _is_results(content: dict[str, Any]) -> bool:
    return all("functionResponse" in p for p in content["parts"])


def _data_url(url: str, param: str) -> dict[str, str]:
    m = _DATA_URL.match(url)
    if not m or not m.group(1):
        raise _unsupported(param, "must be a base64 data: URL with a media type (data:image/png;base64,...).")
    return {"mimeType": m.group(1), "data": m.group(3)}


def _file(f: dict[str, Any], where: str) -> dict[str, Any]:
    if f.get("file_id"):
        raise _unsupported(f"{where}.file.file_id", "(OpenAI Files) cannot be read by Gemini; "
                                                    "send file_data instead.")
    data = str(f.get("file_data") or "")
    if data.startswith("data:"):
        return {"inlineData": _data_url(data, f"{where}.file.file_data")}
    mime = mimetypes.guess_type(str(f.get("filename") or ""))[0]
    if not data or not mime:
        raise _unsupported(f"{where}.file", "needs file_data as a data: URL (or base64 with a filename).")
    return {"inlineData": {"mimeType": mime, "data": data}}
