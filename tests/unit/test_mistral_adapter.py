"""MistralAdapter: what La Plateforme accepts and answers, in OpenAI's terms.

The messages a client replays (an OpenAI answer echoed back, a conversation begun on
another vendor) must pass Mistral's per-message validation; Mistral's own finish
reasons and list content must reach the client as OpenAI's. A round trip through
FakeMistral, which refuses what the API refuses, checks the adapter and fake agree.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from llm_gateway import errors
from llm_gateway.adapters.mistral import BRIDGE, MistralAdapter, tool_id
from llm_gateway.settings import ProviderConfig, Secret, Settings
from tests.fakes.mistral import FakeMistral


def adapter(base_url: str = "https://api.mistral.ai") -> MistralAdapter:
    p = ProviderConfig(name="mistral", kind="mistral", base_url=base_url, api_key=Secret(FakeMistral.api_key))
    return MistralAdapter(p, Settings())


HISTORY = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "refusal": None, "annotations": [], "audio": None,
     "function_call": None, "tool_calls": [{"id": "call_PTLP8xhu0Qw7", "type": "function",
                                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_PTLP8xhu0Qw7", "content": "18C"},
    {"role": "user", "content": "And now?"},
]


def body(req: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(adapter().build_request(req, "mistral-small-latest", stream=False).body)


def test_replayed_history_is_sent_as_mistral_takes_it() -> None:
    msgs = body({"messages": HISTORY})["messages"]
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert set(msgs[2]) == {"role", "content", "tool_calls"}  # output-only echoes left out
    call_id = msgs[2]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum() and msgs[3]["tool_call_id"] == call_id
    assert HISTORY[2]["tool_calls"][0]["id"] == "call_PTLP8xhu0Qw7"  # the client's request is not changed


def test_tool_ids() -> None:
    assert tool_id("abcDEF123") == "abcDEF123"
    assert tool_id("call_1") == tool_id("call_1") != tool_id("call_2")
    assert len({tool_id(f"toolu_{i}") for i in range(1000)}) == 1000


@pytest.mark.parametrize("message, param", [
    ({"role": "user", "content": "hi", "name": "ada"}, "messages[0].name"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]},
     "messages[0].content[0]"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}, "messages[0].content[0]"),
])
def test_what_mistral_cannot_take_is_refused_naming_it(message: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        body({"messages": [message]})
    assert e.value.param == param


def _answer(finish: str, content: Any = "Done.") -> bytes:
    return orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": finish}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def test_finish_reasons_and_list_content() -> None:
    a = adapter()
    assert a.parse_response(_answer("model_length"), "m")["choices"][0]["finish_reason"] == "length"
    with pytest.raises(errors.UpstreamBadResponse) as e:
        a.parse_response(_answer("error"), "m")
    assert e.value.retryable
    listed = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}, {"type": "text", "text": "42"}]
    assert a.parse_response(_answer("stop", listed), "m")["choices"][0]["message"]["content"] == "42"


def test_stream_finish_reasons_and_list_content() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    tr = adapter().new_stream_translator({}, "m")
    out = tr.feed_data(chunk({"content": [{"type": "thinking", "thinking": []}, {"type": "text", "text": "4"}]}))
    assert orjson.loads(out[0])["choices"][0]["delta"]["content"] == "4"
    out = tr.feed_data(chunk({"content": "2"}, "model_length"))
    assert orjson.loads(out[0])["choices"][0]["finish_reason"] == "length" and tr.finish_reason == "length"
    assert "".join(tr.text) == "42"
    plain = chunk({"content": "x"})
    assert adapter().new_stream_translator({}, "m").feed_data(plain) == [plain]  # passed through as received
    with pytest.raises(errors.UpstreamBadResponse):
        adapter().new_stream_translator({}, "m").feed_data(chunk({}, "error"))


async def test_round_trip_through_the_strict_fake() -> None:
    fake = FakeMistral()
    await fake.start()
    try:
        up = adapter(fake.url).build_request({"messages": HISTORY}, "mistral-small-latest", stream=False)
        async with aiohttp.ClientSession() as s, s.post(up.url, data=up.body, headers=up.headers) as r:
            assert r.status == 200, await r.text()
        raw = orjson.loads(up.body)
        for bad in ({**raw, "messages": [{"role": "developer", "content": "x"}]},
                    {**raw, "messages": [{"role": "user", "content": "x", "name": "ada"}]},
                    {**raw, "messages": HISTORY[1:4]}):  # an OpenAI tool-call id as it was
            async with aiohttp.ClientSession() as s, s.post(up.url, data=orjson.dumps(bad), headers=up.headers) as r:
                assert r.status in (400, 422), bad
    finally:
        await fake.stop()


def test_fields_mistral_takes_pass_and_efforts_it_lacks_are_refused() -> None:
    b = body({"messages": [{"role": "user", "content": "x"}], "metadata": {"session": "a"},
              "prompt_cache_key": "user-42", "reasoning_effort": "high"})
    assert (b["metadata"], b["prompt_cache_key"], b["reasoning_effort"]) == ({"session": "a"}, "user-42", "high")
    with pytest.raises(errors.UnsupportedParameter) as e:
        body({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"})
    assert e.value.param == "reasoning_effort"


#: valid OpenAI conversations whose shape Mistral refuses as it stands
AGENT_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "user", "content": "Never mind. Say hi."},  # the user spoke before the model answered
    {"role": "assistant", "content": ""},  # an empty turn replayed
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
    {"role": "assistant", "content": None, "refusal": "No."},  # an OpenAI refusal echoed back
    {"role": "user", "content": "hi"},
]


def test_agent_histories_are_sent_in_a_shape_mistral_takes() -> None:
    b = body({"messages": AGENT_HISTORY, "tools": [{"type": "function", "function": {"name": "now"}}]})
    roles = [m["role"] for m in b["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant", "assistant", "assistant", "user"]
    assert b["messages"][3] == {"role": "assistant", "content": BRIDGE}  # between the tool result and the user
    assert b["messages"][5]["content"] == BRIDGE
    assert b["messages"][6]["content"] == [{"type": "text", "text": "I can't."}]
    assert b["messages"][7]["content"] == "No."
    assert b["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert len(AGENT_HISTORY) == 8 and "parameters" not in str(AGENT_HISTORY)  # the client's request is not changed


@pytest.mark.parametrize("last", [
    {"role": "assistant", "content": "Once upon"},  # no prefix: Mistral would refuse it
    {"role": "system", "content": "Be brief."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
])
def test_a_conversation_mistral_cannot_serve_is_refused_before_the_call(last: dict[str, Any]) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        body({"messages": [{"role": "user", "content": "hi"}, last]})
    assert e.value.param == "messages[1]" and "prefix" in e.value.message
    prefill = body({"messages": [{"role": "user", "content": "hi"}, {**last, "prefix": True}]}) \
        if last["role"] == "assistant" and last["content"] else None
    assert prefill is None or prefill["messages"][-1]["prefix"] is True


async def test_agent_histories_pass_the_strict_fake() -> None:
    fake = FakeMistral()
    await fake.start()
    try:
        tools = [{"type": "function", "function": {"name": "now"}}]
        up = adapter(fake.url).build_request({"messages": AGENT_HISTORY, "tools": tools},
                                              "mistral-small-latest", stream=False)
        async with aiohttp.ClientSession() as s:
            async with s.post(up.url, data=up.body, headers=up.headers) as r:
                assert r.status == 200, await r.text()
            raw = orjson.loads(up.body)
            for bad in ({**raw, "messages": AGENT_HISTORY[:4]},  # as the client sent it
                        {**raw, "messages": raw["messages"][:2]},
                        {**raw, "tools": tools}):
                async with s.post(up.url, data=orjson.dumps(bad), headers=up.headers) as r:
                    assert r.status in (400, 422), bad
    finally:
        await fake.stop()
