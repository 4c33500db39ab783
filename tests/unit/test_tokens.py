"""Prompt estimates: every part of a request the vendor reads as input is counted, so a
budget or a tokens-per-minute limit cannot be passed by moving the prompt into tools,
a response schema or attachments."""

from __future__ import annotations

import base64

from llm_gateway.tokens import (IMAGE_TOKENS, IMAGE_TOKENS_LOW, estimate_prompt_tokens, estimate_request_tokens,
                                estimate_tokens)

HI = [{"role": "user", "content": "hi"}]
BIG = "word " * 5000  # ~5,000 tokens


def test_tool_definitions_and_schemas_count() -> None:
    base = estimate_request_tokens({"messages": HI})
    assert base == estimate_prompt_tokens(HI)
    tools = [{"type": "function", "function": {"name": "f", "description": BIG, "parameters": {"type": "object"}}}]
    assert estimate_request_tokens({"messages": HI, "tools": tools}) - base >= estimate_tokens(BIG)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"description": BIG}}}
    assert estimate_request_tokens({"messages": HI, "response_format": fmt}) - base >= estimate_tokens(BIG)
    assert estimate_request_tokens({"messages": HI, "tools": "not a list", "response_format": {"type": "text"}}) == base


def test_attachments_count() -> None:
    def with_part(part: dict) -> int:
        return estimate_prompt_tokens([{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}])

    text_only = estimate_prompt_tokens([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert with_part({"type": "image_url", "image_url": {"url": "https://x/y.png"}}) - text_only == IMAGE_TOKENS
    low = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    assert with_part(low) - text_only == IMAGE_TOKENS_LOW
    pdf = base64.b64encode(b"%PDF" + b"x" * 1_000_000).decode()
    assert with_part({"type": "file", "file": {"file_data": pdf}}) - text_only >= 20_000
    wav = base64.b64encode(b"\0" * 160_000).decode()  # ~10 s of compressed speech
    assert 100 <= with_part({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}) - text_only < 1000
