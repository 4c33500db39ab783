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


def test_any_text_is_counted_never_refused() -> None:
    # bpe-openai refuses a text of 1,000,000 characters, one of over 200,000 tokens and
    # special-token text; an estimate must count all of them (a refusal was a 500, and
    # inside a stream a second HTTP response written into the body)
    assert estimate_tokens("a b " * 250_000) == 500_001  # 1,000,000 chars: "a" " b" " a" ... " "
    assert estimate_tokens("x" * 1_200_000) > 100_000
    cjk = "漢字と😀" * 300_000  # up to 4 byte-level tokens per character
    assert estimate_tokens(cjk) >= len(cjk) // 2
    assert estimate_tokens("hello <|endoftext|> there") > estimate_tokens("hello  there")
    # cut at spaces, a long text counts as its pieces would together
    prose = "The quick brown fox jumps over the lazy dog. " * 30_000
    assert estimate_tokens(prose) == 30_000 * estimate_tokens("The quick brown fox jumps over the lazy dog.") + 1


def test_a_request_is_estimated_once(monkeypatch) -> None:
    """TPM limits, the budget and an answer without vendor usage share one count."""
    from llm_gateway import tokens
    from llm_gateway.context import RequestContext

    counted: list[int] = []
    real = tokens.estimate_request_tokens
    monkeypatch.setattr(tokens, "estimate_request_tokens", lambda body: counted.append(1) or real(body))
    ctx = RequestContext("r1")
    body = {"messages": [{"role": "user", "content": BIG}]}
    first = tokens.request_estimate(ctx, body)
    assert tokens.request_estimate(ctx, body) == first == real(body) and len(counted) == 1
    other = {"messages": HI}  # another body (a recovery's prefilled copy): counted for itself
    assert tokens.request_estimate(ctx, other) == real(other) and len(counted) == 2
    assert tokens.request_estimate(None, body) == first and len(counted) == 3
