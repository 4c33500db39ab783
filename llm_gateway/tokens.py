"""Offline token estimates, for answers a vendor did not count and for cost estimates.

``bpe-openai`` ships OpenAI's genuine ``o200k_base`` BPE ranks inside its wheel, so the
count is exact for current OpenAI models and a close estimate for the others with no
network access. The encoding is loaded once (``warm_up`` at start-up), never per request.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import orjson


@lru_cache(maxsize=1)
def _encoding() -> Any:
    try:
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")
    except Exception:  # pragma: no cover - the package is a dependency; be robust anyway
        return None


def warm_up() -> None:
    _encoding()


#: the longest piece encoded at once: bpe-openai refuses a text of 1,000,000 characters or
#: one that yields over 200,000 tokens, and a character is at most 4 byte-level tokens
PIECE = 40_000


def estimate_tokens(text: str) -> int:
    """The tokens of ``text``, for any length and any content; never raises.

    Special-token text (``<|endoftext|>``) is counted as the plain text a vendor reads,
    and a long text is encoded in pieces cut at a space, where a split changes nothing."""
    if not text:
        return 0
    enc = _encoding()
    if enc is None:  # pragma: no cover
        return _rough(text)
    n = len(text)
    if n <= PIECE:
        return _count(enc, text)
    total = start = 0
    while start < n:
        end = min(start + PIECE, n)
        if end < n:
            cut = text.rfind(" ", start + PIECE // 2, end)
            if cut > start:
                end = cut
        total += _count(enc, text[start:end])
        start = end
    return total


def _count(enc: Any, piece: str) -> int:
    try:
        return len(enc.encode_ordinary(piece))
    except Exception:  # pragma: no cover - an estimate must never fail a request
        return _rough(piece)


def _rough(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


#: tokens OpenAI adds per chat message and per reply (the chat-format framing)
PER_MESSAGE = 3
PER_REPLY = 3
#: an image part whose size is unknown here: OpenAI's count for a high-detail image at
#: its largest (85 + 170 per 512-px tile, 8 tiles), near Anthropic's (~1,600 at 1.15 MP)
#: and above Gemini's (258 per image); ``detail: low`` is OpenAI's flat 85
IMAGE_TOKENS = 1445
IMAGE_TOKENS_LOW = 85
#: audio and file parts (base64 in the body): tokens per byte of their data, generous
#: (compressed speech runs ~16 kB/s against ~10–30 tokens/s; a PDF page ~50 kB against
#: ~1,500–3,000 tokens with its page image)
AUDIO_BYTES_PER_TOKEN = 500
FILE_BYTES_PER_TOKEN = 20
#: the framing OpenAI adds around function definitions
PER_TOOL = 8


def _part_tokens(p: dict[str, Any]) -> int:
    kind = p.get("type")
    if isinstance(p.get("text"), str):
        return estimate_tokens(p["text"])
    if kind == "image_url":
        img = p.get("image_url")
        return IMAGE_TOKENS_LOW if isinstance(img, dict) and img.get("detail") == "low" else IMAGE_TOKENS
    if kind == "input_audio":
        return _base64_tokens(p.get("input_audio"), "data", AUDIO_BYTES_PER_TOKEN, 0)
    if kind == "file":  # by reference (file_id): a page image's worth
        return _base64_tokens(p.get("file"), "file_data", FILE_BYTES_PER_TOKEN, IMAGE_TOKENS)
    if kind == "refusal" and isinstance(p.get("refusal"), str):
        return estimate_tokens(p["refusal"])
    return 0


def _base64_tokens(obj: Any, field: str, bytes_per_token: int, otherwise: int) -> int:
    data = obj.get(field) if isinstance(obj, dict) else None
    return (len(data) * 3 // 4) // bytes_per_token + 1 if isinstance(data, str) else otherwise


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """The messages' tokens: text, tool calls, and images, audio and files (by size)."""
    total = PER_REPLY
    for m in messages:
        if not isinstance(m, dict):
            continue
        total += PER_MESSAGE
        c = m.get("content")
        if isinstance(c, str):
            total += estimate_tokens(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict):
                    total += _part_tokens(p)
        for call in m.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += estimate_tokens(str(fn.get("name", ""))) + estimate_tokens(str(fn.get("arguments", "")))
    return total


@lru_cache(maxsize=64)
def _json_tokens(text: str) -> int:
    """Tool definitions and schemas: agents send the same ones with every request."""
    return estimate_tokens(text)


def request_estimate(ctx: Any, body: dict[str, Any]) -> int:
    """``estimate_request_tokens(body)``, counted once per request: ``ctx`` (the request's
    context) keeps the count of the body it was made for."""
    if ctx is None:
        return estimate_request_tokens(body)
    if ctx.estimated_body is not body:
        ctx.estimated_prompt = estimate_request_tokens(body)
        ctx.estimated_body = body
    return ctx.estimated_prompt


def estimate_request_tokens(body: dict[str, Any]) -> int:
    """All the prompt a chat request sends: its messages, plus the tool definitions and
    the response schema the vendor also reads as input (budgets and token limits must
    not miss a part of the prompt the caller controls)."""
    total = estimate_prompt_tokens(body.get("messages") or [])
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        total += PER_TOOL * len(tools) + _json_tokens(orjson.dumps(tools).decode())
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        total += _json_tokens(orjson.dumps(fmt.get("json_schema")).decode())
    return total
