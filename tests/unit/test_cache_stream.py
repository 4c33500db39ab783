"""Stream ↔ stored answer: assembling a completed stream, replaying a stored answer."""

from __future__ import annotations

import orjson

from llm_gateway.cache.stream import StreamRecorder, replay_chunks

USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 0.0001}


def chunk(choices, **kw):
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m-1",
            "choices": choices, **kw}


def test_assembles_text_from_dicts_and_bytes():
    rec = StreamRecorder()
    rec.feed(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
    rec.feed(orjson.dumps(chunk([{"index": 0, "delta": {"content": "Hello "}, "finish_reason": None}],
                                system_fingerprint="fp")))
    rec.feed(chunk([{"index": 0, "delta": {"content": "world"}, "finish_reason": None}]))
    rec.feed(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    out = rec.response(USAGE, "fallback-model")
    assert out == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": USAGE, "system_fingerprint": "fp",
    }


def test_assembles_tool_calls_and_several_choices():
    rec = StreamRecorder()
    rec.feed(chunk([{"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]))
    rec.feed(chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]))
    rec.feed(chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]))
    rec.feed(chunk([{"index": 1, "delta": {"role": "assistant", "content": "B"}}]))
    rec.feed(chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"},
                    {"index": 1, "delta": {}, "finish_reason": "stop"}]))
    out = rec.response(None, "m")
    m0 = out["choices"][0]["message"]
    assert m0["content"] is None
    assert m0["tool_calls"] == [{"id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert out["choices"][1]["message"] == {"role": "assistant", "content": "B"}


def test_incomplete_or_unknown_streams_are_not_assembled():
    rec = StreamRecorder()
    rec.feed(chunk([{"index": 0, "delta": {"content": "cut"}, "finish_reason": None}]))
    assert rec.response(USAGE, "m") is None  # no finish reason: truncated
    rec = StreamRecorder()
    rec.feed(chunk([{"index": 0, "delta": {"audio": {"data": "..."}}, "finish_reason": "stop"}]))
    assert rec.response(USAGE, "m") is None  # a delta field we cannot assemble: never store a partial
    rec = StreamRecorder()
    rec.feed(b"{not json")
    rec.feed(chunk([{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]))
    assert rec.response(USAGE, "m") is None
    assert StreamRecorder().response(USAGE, "m") is None


def test_replay_round_trips_through_the_recorder():
    stored = {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 3, "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "logprobs": None,
             "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
             "logprobs": None, "finish_reason": "tool_calls"},
        ],
        "usage": USAGE,
    }
    chunks = replay_chunks(stored, include_usage=True)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-9" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    rec = StreamRecorder()
    for c in chunks[:-1]:
        rec.feed(c)
    assert rec.response(USAGE, "x") == stored
    assert "usage" not in replay_chunks(stored, include_usage=False)[-1]
