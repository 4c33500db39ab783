"""Offline token estimates, for answers a vendor did not count and for cost estimates.

``bpe-openai`` ships OpenAI's genuine ``o200k_base`` BPE ranks inside its wheel, so the
count is exact for current OpenAI models and a close estimate for the others with no
network access. The encoding is loaded once (``warm_up`` at start-up), never per request.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _encoding() -> Any:
    try:
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")
    except Exception:  # pragma: no cover - the package is a dependency; be robust anyway
        return None


def warm_up() -> None:
    _encoding()


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    enc = _encoding()
    if enc is None:  # pragma: no cover
        return max(1, math.ceil(len(text) / 4))
    return len(enc.encode(text))


#: tokens OpenAI adds per chat message and per reply (the chat-format framing)
PER_MESSAGE = 3
PER_REPLY = 3


def estimate_prompt_tokens(messages: list[Any]) -> int:
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
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    total += estimate_tokens(p["text"])
        for call in m.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += estimate_tokens(str(fn.get("name", ""))) + estimate_tokens(str(fn.get("arguments", "")))
    return total
