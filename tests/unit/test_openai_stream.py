"""OpenAIStreamTranslator: chunks pass through as received, and look as OpenAI's would."""

from __future__ import annotations

import orjson

from llm_gateway.adapters.openai import OpenAIAdapter
from llm_gateway.settings import ProviderConfig, Settings


def translator(include_usage: bool = True):  # type: ignore[no-untyped-def]
    p = ProviderConfig(name="local", kind="openai", base_url="http://127.0.0.1:1/v1", api_key=None)
    req = {"stream_options": {"include_usage": True}} if include_usage else {}
    return OpenAIAdapter(p, Settings()).new_stream_translator(req, "llama3.2")


def chunk(**fields) -> bytes:  # type: ignore[no-untyped-def]
    return orjson.dumps({"object": "chat.completion.chunk", "model": "llama3.2", **fields})


def test_chunks_without_id_or_created_all_get_the_same() -> None:
    """Some OpenAI-compatible servers send neither; OpenAI's chunks all carry one of each."""
    tr = translator()
    out = [c if isinstance(c, dict) else orjson.loads(c) for raw in (
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        chunk(choices=[{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]),
    ) for c in tr.feed_data(raw)]
    assert len({c["id"] for c in out}) == 1 and out[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in out}) == 1 and out[0]["created"] > 0
    assert tr.identity()[:2] == (out[0]["id"], out[0]["created"])  # the usage chunk's too


def test_chunks_with_an_id_pass_through_as_received() -> None:
    tr = translator()
    raw = chunk(id="chatcmpl-1", created=5, choices=[{"index": 0, "delta": {"content": "Hi"}}], usage=None)
    assert tr.feed_data(raw) == [raw]
    quiet = translator(include_usage=False)  # the gateway asked for usage the client did not
    assert orjson.loads(quiet.feed_data(raw)[0]) == {k: v for k, v in orjson.loads(raw).items() if k != "usage"}
