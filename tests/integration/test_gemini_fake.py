"""GeminiAdapter against FakeGemini over real HTTP: adapter and fake agree on the wire.

What ``build_request`` produces is sent with aiohttp as is; the answer goes through
``parse_response`` / ``parse_error``, or ``SSEParser`` and the stream translator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from llm_gateway import errors
from llm_gateway.adapters.base import UpstreamRequest
from llm_gateway.adapters.gemini import GeminiAdapter
from llm_gateway.settings import ProviderConfig, Secret, Settings
from llm_gateway.sse import SSEParser
from tests.fakes.base import Fault
from tests.fakes.gemini import FakeGemini, google_error, rate_limited

MODEL = "gemini-2.0-flash"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    f = FakeGemini()
    await f.start()
    yield f
    await f.stop()


def make(fake: FakeGemini, key: str | None = FakeGemini.api_key, version: str = "v1beta") -> GeminiAdapter:
    return GeminiAdapter(ProviderConfig("gemini", "gemini", fake.url, Secret(key) if key else None,
                                        api_version=version), Settings())


def chat(text: str = "Say hello", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "system", "content": "Be nice."},
                                         {"role": "user", "content": text}], **fields}


async def send(up: UpstreamRequest) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(up.method, up.url, headers=up.headers, data=up.body) as r:
        return r.status, dict(r.headers), await r.read()


async def complete(a: GeminiAdapter, req: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    status, headers, body = await send(a.build_request(req, model, stream=False))
    if status != 200:
        raise a.parse_error(status, headers, body)
    return a.parse_response(body, model)


async def stream(a: GeminiAdapter, req: dict[str, Any], model: str = MODEL) -> tuple[Any, list[dict[str, Any]]]:
    up = a.build_request({**req, "stream": True}, model, stream=True)
    tr = a.new_stream_translator(req, model)
    parser, chunks = SSEParser(), []
    async with aiohttp.ClientSession() as s, s.post(up.url, headers=up.headers, data=up.body) as r:
        if r.status != 200:
            raise a.parse_error(r.status, dict(r.headers), await r.read())
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for piece in r.content.iter_any():
            for ev in parser.feed(piece):
                chunks += tr.feed(ev)
    for ev in parser.close():
        chunks += tr.feed(ev)
    return tr, chunks + tr.finish()


async def test_non_streaming_round_trip(fake: FakeGemini) -> None:
    out = await complete(make(fake), chat(temperature=0.5, max_tokens=50))
    assert out["choices"][0]["message"]["content"] == "Hello from fake Gemini."
    assert out["choices"][0]["finish_reason"] == "stop" and out["model"] == "gemini-2.0-flash-001"
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10,
                            "prompt_tokens_details": {"cached_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 0}}
    rec = fake.last
    assert rec.path == f"/v1beta/models/{MODEL}:generateContent" and rec.query == {}
    assert rec.headers["x-goog-api-key"] == FakeGemini.api_key
    assert rec.body["systemInstruction"] == {"parts": [{"text": "Be nice."}]}
    assert rec.body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 50}


async def test_streaming_round_trip(fake: FakeGemini) -> None:
    tr, chunks = await stream(make(fake), chat(stream_options={"include_usage": True}))
    assert fake.last.query == {"alt": "sse"} and "stream" not in fake.last.body
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello from fake Gemini."
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert tr.done and tr.usage["total_tokens"] == 10 and "".join(tr.text) == "Hello from fake Gemini."


async def test_several_candidates_and_max_tokens(fake: FakeGemini) -> None:
    out = await complete(make(fake), chat(n=2, max_completion_tokens=2))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "Hello from", "length"), (1, "Hello from", "length")]
    tr, chunks = await stream(make(fake), chat(n=2))
    assert tr.done and {c["choices"][0]["index"] for c in chunks} == {0, 1}


async def test_tool_call_round_trip(fake: FakeGemini) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    a = make(fake)
    out = await complete(a, chat(tools=tools, tool_choice="required"))
    msg = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q":"fake"}'}
    follow = chat(tools=tools)
    follow["messages"] += [msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "42"}]
    out = await complete(a, follow)
    assert out["choices"][0]["message"]["content"] == "Hello from fake Gemini."
    sent = fake.last.body["contents"]
    assert sent[-1]["parts"][0]["functionResponse"] == {"name": "lookup", "response": {"output": "42"},
                                                        "id": sent[-2]["parts"][0]["functionCall"]["id"]}
    tr, chunks = await stream(a, chat(tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}}))
    assert tr.finish_reason == "tool_calls" and tr.done
    assert any("tool_calls" in c["choices"][0]["delta"] for c in chunks)


async def test_missing_usage(fake: FakeGemini) -> None:
    fake.inject(Fault(usage=False), Fault(usage=False))
    assert (await complete(make(fake), chat()))["usage"] is None
    tr, _ = await stream(make(fake), chat())
    assert tr.done and tr.usage is None


async def test_rate_limit_with_retry_info(fake: FakeGemini) -> None:
    fake.inject(Fault(status=429, body=rate_limited("1.5s")))
    with pytest.raises(errors.RateLimited) as e:
        await complete(make(fake), chat())
    assert e.value.retry_after == 1.5 and e.value.upstream_status == 429
    fake.inject(Fault(status=503, body=google_error(503, "UNAVAILABLE", "The model is overloaded.")))
    with pytest.raises(errors.Overloaded):
        await stream(make(fake), chat())


async def test_auth_failures_never_show_the_key(fake: FakeGemini) -> None:
    with pytest.raises(errors.UpstreamAuthFailed) as e:
        await complete(make(fake, key="wrong-key-123"), chat())
    assert "wrong-key-123" not in e.value.message and e.value.upstream_status == 400
    with pytest.raises(errors.UpstreamAuthFailed) as e:
        await complete(make(fake, key=None), chat())
    assert e.value.upstream_status == 403


async def test_unknown_model_and_api_version(fake: FakeGemini) -> None:
    with pytest.raises(errors.ModelNotFound):
        await complete(make(fake), chat(), model="no-such-model")
    out = await complete(make(fake, version="v1"), chat())
    assert out["choices"][0]["message"]["content"] and fake.last.path.startswith("/v1/models/")


async def test_fake_refuses_unknown_fields(fake: FakeGemini) -> None:
    a = make(fake)
    up = a.build_request(chat(), MODEL, stream=False)
    up.body = orjson.dumps({**orjson.loads(up.body), "temperature": 1})  # a canonical field leaking
    status, headers, body = await send(up)
    err = a.parse_error(status, headers, body)
    assert type(err) is errors.BadRequest and 'Unknown name "temperature"' in err.message


async def test_stream_faults(fake: FakeGemini) -> None:
    fake.text = "one two three four"
    fake.inject(Fault(no_done=True))
    tr, chunks = await stream(make(fake), chat())
    assert not tr.done and "".join(tr.text) == "one two three "
    fake.inject(Fault(malformed_at=1))
    with pytest.raises(ValueError):
        await stream(make(fake), chat())
