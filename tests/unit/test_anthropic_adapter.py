"""AnthropicAdapter: golden request/response/stream files, errors, and a round trip
through FakeAnthropic (adapter and fake must agree on the wire format).

Regenerate the expected halves of the golden files after a deliberate change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_anthropic_adapter.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from llm_gateway import errors
from llm_gateway.adapters.anthropic import AnthropicAdapter
from llm_gateway.settings import ProviderConfig, Secret, Settings
from llm_gateway.sse import SSEEvent, SSEParser
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import Fault

GOLDEN = Path(__file__).parent / "golden" / "anthropic"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
KEY = FakeAnthropic.api_key


def adapter(version: str | None = "2023-06-01", base_url: str = "https://api.anthropic.com",
            prefill: bool | None = None) -> AnthropicAdapter:
    p = ProviderConfig(name="anthropic", kind="anthropic", base_url=base_url, api_key=Secret(KEY),
                       api_version=version, supports_prefill=prefill)
    return AnthropicAdapter(p, Settings())


def golden(path: Path, key: str, actual: Any) -> None:
    """Compare ``actual`` with ``data[key]`` of a golden file (or write it with UPDATE_GOLDEN)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    if UPDATE or key not in data:
        data[key] = actual
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    assert actual == data[key]


def events(text: str) -> list[SSEEvent]:
    p = SSEParser()
    return p.feed(text.encode()) + p.close()


def translate(sse_text: str) -> tuple[Any, list[dict[str, Any]]]:
    tr = adapter().new_stream_translator({}, "claude-sonnet-4-6")
    chunks: list[dict[str, Any]] = []
    for ev in events(sse_text):
        chunks.extend(tr.feed(ev))  # type: ignore[arg-type]
    chunks.extend(tr.finish())  # type: ignore[arg-type]
    return tr, chunks


def strip_created(obj: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(obj.pop("created"), int)
    return obj


# ---------------------------------------------------------------- requests (golden)
@pytest.mark.parametrize("path", sorted((GOLDEN / "requests").glob("*.json")), ids=lambda p: p.stem)
def test_request_golden(path: Path) -> None:
    case = json.loads(path.read_text())
    req = case["request"]
    up = adapter(case["api_version"]).build_request(req, req["model"], stream=case["stream"])
    assert up.method == "POST" and up.stream is case["stream"]
    golden(path, "expected", {"url": up.url, "headers": up.headers, "body": orjson.loads(up.body)})


def test_system_never_a_message_role() -> None:
    body = orjson.loads(adapter().build_request(
        json.loads((GOLDEN / "requests" / "system_placement.json").read_text())["request"], "m", stream=False).body)
    assert body["system"] == "You are terse.\n\nAnswer in French.\n\nNever use emoji."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_auth_header_by_version() -> None:
    old = adapter("2023-06-01").build_request({"messages": [{"role": "user", "content": "x"}]}, "m", stream=False)
    assert old.headers["x-api-key"] == KEY and "authorization" not in old.headers
    assert old.headers["anthropic-version"] == "2023-06-01"
    new = adapter("2026-10-21").build_request({"messages": [{"role": "user", "content": "x"}]}, "m", stream=False)
    assert new.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in new.headers
    assert adapter(None).version == "2023-06-01"
    assert KEY not in repr(new) and KEY not in repr(old)


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_new_version_rejects_sampling(field: str) -> None:
    req = {"messages": [{"role": "user", "content": "x"}], field: 0.5}
    with pytest.raises(errors.UnsupportedParameter) as e:
        adapter("2026-10-21").build_request(req, "m", stream=False)
    assert e.value.param == field and "2026-10-21" in e.value.message and e.value.status == 400
    assert orjson.loads(adapter("2023-06-01").build_request(req, "m", stream=False).body)[field] == 0.5


@pytest.mark.parametrize("field,value", [
    ("n", 2), ("seed", 7), ("logprobs", True), ("presence_penalty", 0.5), ("frequency_penalty", 1),
    ("logit_bias", {"50256": -100}), ("response_format", {"type": "json_object"}), ("metadata", {"a": "b"}),
    ("functions", [{"name": "f"}]), ("reasoning_effort", "minimal"), ("reasoning_effort", "none"),
])
def test_unsupported_parameters(field: str, value: Any) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        adapter().build_request({"messages": [{"role": "user", "content": "x"}], field: value}, "m", stream=False)
    assert e.value.param == field


def test_neutral_defaults_and_none_are_accepted() -> None:
    req = {"messages": [{"role": "user", "content": "x"}], "n": 1, "seed": None, "logprobs": False,
           "presence_penalty": 0, "frequency_penalty": 0.0, "response_format": {"type": "text"},
           "parallel_tool_calls": True, "stream_options": {"include_usage": True}}
    body = orjson.loads(adapter().build_request(req, "m", stream=False).body)
    assert set(body) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize("value", [1.01, 2, -0.1])
def test_temperature_outside_anthropic_range(value: float) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        adapter().build_request({"messages": [{"role": "user", "content": "x"}], "temperature": value},
                                "m", stream=False)
    assert e.value.param == "temperature"


def test_max_tokens_precedence_and_default() -> None:
    def mt(**kw: Any) -> int:
        req = {"messages": [{"role": "user", "content": "x"}], **kw}
        return orjson.loads(adapter().build_request(req, "m", stream=False).body)["max_tokens"]

    assert mt() == Settings().anthropic_default_max_tokens == 4096
    assert mt(max_tokens=10) == 10
    assert mt(max_tokens=10, max_completion_tokens=20) == 20


@pytest.mark.parametrize("choice,expected", [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
])
def test_tool_choice_strings(choice: str, expected: dict[str, Any]) -> None:
    req = {"messages": [{"role": "user", "content": "x"}], "tool_choice": choice,
           "tools": [{"type": "function", "function": {"name": "f"}}]}
    body = orjson.loads(adapter().build_request(req, "m", stream=False).body)
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_parallel_tool_calls_false_without_tool_choice() -> None:
    req = {"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False,
           "tools": [{"type": "function", "function": {"name": "f"}}]}
    body = orjson.loads(adapter().build_request(req, "m", stream=False).body)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_prefill_rules() -> None:
    # a plain final assistant message is a prefill too; whitespace-only prefill is no prefill
    body = orjson.loads(adapter().build_request({"messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": "Sure thing:  "}]}, "m", stream=False).body)
    assert body["messages"][-1] == {"role": "assistant", "content": "Sure thing:"}
    body = orjson.loads(adapter().build_request({"messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": " \n"}]}, "m", stream=False).body)
    assert body["messages"] == [{"role": "user", "content": "x"}]
    with pytest.raises(errors.BadRequest) as e:
        adapter().build_request({"messages": [{"role": "user", "content": "x", "prefix": True}]}, "m", stream=False)
    assert e.value.param == "messages[0].prefix"
    with pytest.raises(errors.UnsupportedParameter):
        adapter(prefill=False).build_request({"messages": [
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "prefix": True}]},
            "m", stream=False)


@pytest.mark.parametrize("message,param", [
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": "x", "name": "bob"}, "messages[0].name"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
     "messages[0].content[0].image_url"),
])
def test_message_level_rejections(message: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.BadRequest) as e:
        adapter().build_request({"messages": [message]}, "m", stream=False)
    assert e.value.param == param


def test_echoed_openai_assistant_message() -> None:
    echoed = {"role": "assistant", "content": "Hi", "refusal": None, "annotations": [], "audio": None,
              "function_call": None, "tool_calls": None}
    body = orjson.loads(adapter().build_request({"messages": [
        {"role": "user", "content": "x"}, echoed, {"role": "user", "content": "y"}]}, "m", stream=False).body)
    assert body["messages"][1] == {"role": "assistant", "content": "Hi"}
    with pytest.raises(errors.UnsupportedParameter) as e:
        adapter().build_request({"messages": [{"role": "user", "content": "x"},
                                              {**echoed, "function_call": {"name": "f", "arguments": "{}"}}]},
                                "m", stream=False)
    assert e.value.param == "messages[1].function_call"


def test_bad_tool_call_arguments() -> None:
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
        {"role": "tool", "tool_call_id": "t", "content": "r"}]
    with pytest.raises(errors.BadRequest) as e:
        adapter().build_request({"messages": msgs}, "m", stream=False)
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"


# ---------------------------------------------------------------- responses (golden)
@pytest.mark.parametrize("path", sorted((GOLDEN / "responses").glob("*.json")), ids=lambda p: p.stem)
def test_response_golden(path: Path) -> None:
    raw = orjson.dumps(json.loads(path.read_text())["anthropic"])
    golden(path, "expected", strip_created(adapter().parse_response(raw, "requested-model")))


def test_response_usage_and_finish() -> None:
    data = json.loads((GOLDEN / "responses" / "text_cached.json").read_text())["anthropic"]
    out = adapter().parse_response(orjson.dumps(data), "m")
    assert out["usage"] == {"prompt_tokens": 2030, "completion_tokens": 12, "total_tokens": 2042,
                            "prompt_tokens_details": {"cached_tokens": 2000}}
    assert out["model"] == "claude-sonnet-4-6-20260101" and out["object"] == "chat.completion"
    assert out["choices"][0]["finish_reason"] == "stop"
    for reason, finish in [("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
                           ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"),
                           ("refusal", "content_filter")]:
        data["stop_reason"] = reason
        assert adapter().parse_response(orjson.dumps(data), "m")["choices"][0]["finish_reason"] == finish


def test_unparseable_response() -> None:
    with pytest.raises(errors.UpstreamBadResponse):
        adapter().parse_response(b"<html>oops</html>", "m")


# ---------------------------------------------------------------- streams (golden)
@pytest.mark.parametrize("name", ["text", "tool_use"])
def test_stream_golden(name: str) -> None:
    tr, chunks = translate((GOLDEN / "streams" / f"{name}.sse").read_text())
    for c in chunks:
        strip_created(c)
    expected = GOLDEN / "streams" / f"{name}.expected.json"
    golden(expected, "chunks", chunks)
    golden(expected, "state",
           {"usage": tr.usage, "finish_reason": tr.finish_reason, "text": "".join(tr.text), "done": tr.done})


def test_stream_text_details() -> None:
    tr, chunks = translate((GOLDEN / "streams" / "text.sse").read_text())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL" and chunks[0]["model"] == "claude-sonnet-4-6"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" not in c for c in chunks)
    assert tr.done and "".join(tr.text) == "Hello, world!"
    assert tr.usage == {"prompt_tokens": 125, "completion_tokens": 15, "total_tokens": 140,
                        "prompt_tokens_details": {"cached_tokens": 100}}


def test_stream_tool_use_details() -> None:
    tr, chunks = translate((GOLDEN / "streams" / "tool_use.sse").read_text())
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "San Francisco"}
    assert "".join(tr.text) == "Let me check the weather."  # thinking is not content
    assert tr.finish_reason == "tool_calls"


def test_stream_error_event_raises_overloaded() -> None:
    tr = adapter().new_stream_translator({}, "m")
    evs = events((GOLDEN / "streams" / "error.sse").read_text())
    out = [c for ev in evs[:-1] for c in tr.feed(ev)]
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""}, {"content": "Once upon"}]
    with pytest.raises(errors.Overloaded) as e:
        tr.feed(evs[-1])
    assert e.value.provider == "anthropic" and e.value.retryable and not tr.done


@pytest.mark.parametrize("etype,cls", [
    ("rate_limit_error", errors.RateLimited), ("api_error", errors.UpstreamUnavailable),
    ("timeout_error", errors.UpstreamTimeout), ("invalid_request_error", errors.BadRequest),
])
def test_stream_error_event_types(etype: str, cls: type[errors.GatewayError]) -> None:
    data = orjson.dumps({"type": "error", "error": {"type": etype, "message": "m"}}).decode()
    with pytest.raises(cls):
        adapter().new_stream_translator({}, "m").feed(SSEEvent(data, "error"))


def test_stream_error_event_of_odd_shape_is_still_an_upstream_error() -> None:
    with pytest.raises(errors.UpstreamUnavailable):
        adapter().new_stream_translator({}, "m").feed(SSEEvent('{"type": "error", "error": "boom"}', "error"))


def test_stream_malformed_and_ping() -> None:
    tr = adapter().new_stream_translator({}, "m")
    assert tr.feed(SSEEvent('{"type": "ping"}', "ping")) == []
    assert tr.feed(SSEEvent('{"type": "some_future_event"}', "some_future_event")) == []
    with pytest.raises(ValueError):
        tr.feed(SSEEvent("{this is not json", "content_block_delta"))
    with pytest.raises(ValueError):
        tr.feed(SSEEvent('{"type": "content_block_delta", "index": 0, "delta": "text"}', "content_block_delta"))


# ---------------------------------------------------------------- errors
def err_body(etype: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_011"})


@pytest.mark.parametrize("status,etype,message,cls,http", [
    (400, "invalid_request_error", "prompt is too long: 208432 tokens > 200000 maximum", errors.ContextTooLong, 400),
    (400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 199000 + 4096 > 200000",
     errors.ContextTooLong, 400),
    (400, "invalid_request_error", "messages.0.content: Field required", errors.BadRequest, 400),
    (401, "authentication_error", "invalid x-api-key", errors.UpstreamAuthFailed, 502),
    (403, "permission_error", "Your API key does not have permission to use the specified resource.",
     errors.UpstreamAuthFailed, 502),
    (402, "billing_error", "Your credit balance is too low.", errors.UpstreamAuthFailed, 502),
    (404, "not_found_error", "model: claude-nope", errors.ModelNotFound, 404),
    (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", errors.PayloadTooLarge, 413),
    (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
     errors.RateLimited, 429),
    (500, "api_error", "Internal server error", errors.UpstreamUnavailable, 502),
    (502, "api_error", "Bad gateway", errors.UpstreamUnavailable, 502),
    (503, "api_error", "Service unavailable", errors.UpstreamUnavailable, 502),
    (504, "timeout_error", "Request timed out", errors.UpstreamTimeout, 504),
    (529, "overloaded_error", "Overloaded", errors.Overloaded, 503),
])
def test_parse_error(status: int, etype: str, message: str, cls: type[errors.GatewayError], http: int) -> None:
    e = adapter().parse_error(status, {"request-id": "req_011"}, err_body(etype, message))
    assert type(e) is cls and e.status == http
    assert e.provider == "anthropic" and e.upstream_status == status
    if cls in (errors.BadRequest, errors.ContextTooLong):
        assert message in e.message and e.param is None


def test_parse_error_retry_after() -> None:
    a = adapter()
    e = a.parse_error(429, {"retry-after": "17"}, err_body("rate_limit_error", "slow down"))
    assert isinstance(e, errors.RateLimited) and e.retry_after == 17.0 and e.retryable
    assert e.headers() == {"Retry-After": "17"}
    e = a.parse_error(529, {"Retry-After": "3"}, err_body("overloaded_error", "Overloaded"))
    assert isinstance(e, errors.Overloaded) and e.retry_after == 3.0
    assert a.parse_error(529, {}, err_body("overloaded_error", "Overloaded")).retry_after is None
    assert a.parse_error(429, {"retry-after": "soon"}, b"").retry_after is None


def test_parse_error_never_leaks_key_and_survives_garbage() -> None:
    e = adapter().parse_error(401, {}, err_body("authentication_error", f"invalid x-api-key {KEY}"))
    assert KEY not in e.message and not e.retryable
    for body in (b"", b"<html>502 Bad Gateway</html>", b"[1,2]", b'{"error": "plain"}'):
        e = adapter().parse_error(502, {}, body)
        assert isinstance(e, errors.UpstreamUnavailable)
    assert isinstance(adapter().parse_error(400, {}, b"not json"), errors.BadRequest)
    e = adapter().parse_error(400, {}, err_body(
        "invalid_request_error", "This model does not support assistant message prefill. "
                                 "The conversation must end with a user message."))
    assert isinstance(e, errors.UnsupportedParameter) and e.param == "messages"


# ---------------------------------------------------------------- adapter <-> fake round trip
@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    f = FakeAnthropic()
    await f.start()
    yield f
    await f.stop()


async def send(up: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(up.method, up.url, headers=up.headers, data=up.body) as r:
        return r.status, dict(r.headers), await r.read()


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
async def test_round_trip_json(fake: FakeAnthropic, version: str) -> None:
    a = adapter(version, base_url=fake.url)
    req = json.loads((GOLDEN / "requests" / "tools.json").read_text())["request"]
    status, _, body = await send(a.build_request(req, "claude-sonnet-4-6", stream=False))
    assert status == 200, body
    out = a.parse_response(body, "claude-sonnet-4-6")
    assert out["choices"][0]["message"]["content"] == fake.default_text
    assert out["usage"]["completion_tokens"] == 4 and out["model"] == "claude-sonnet-4-6"
    assert fake.last.headers["anthropic-version"] == version


async def test_round_trip_prefill_and_stop(fake: FakeAnthropic) -> None:
    a = adapter(base_url=fake.url)
    req = json.loads((GOLDEN / "requests" / "prefill.json").read_text())["request"]
    fake.text = '"Ada"} and more'
    status, _, body = await send(a.build_request(req, "claude-sonnet-4-6", stream=False))
    assert status == 200, body
    assert fake.prefills == ['{"name":']
    out = a.parse_response(body, "m")
    assert out["choices"][0]["message"]["content"] == '"Ada"' and out["choices"][0]["finish_reason"] == "stop"


async def test_round_trip_stream_with_tool(fake: FakeAnthropic) -> None:
    a = adapter("2026-10-21", base_url=fake.url)
    fake.tool_call = {"name": "get_weather", "input": {"city": "Paris"}}
    req = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
           "tools": [{"type": "function", "function": {"name": "get_weather"}}], "stream": True,
           "stream_options": {"include_usage": True}}
    status, headers, raw = await send(a.build_request(req, "claude-sonnet-5-5", stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    tr = a.new_stream_translator(req, "claude-sonnet-5-5")
    chunks = [c for ev in events(raw.decode()) for c in tr.feed(ev)]
    assert tr.done and "".join(tr.text) == fake.default_text and tr.finish_reason == "tool_calls"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks if "tool_calls" in c["choices"][0]["delta"])
    assert json.loads(args) == {"city": "Paris"}
    assert tr.usage is not None and tr.usage["completion_tokens"] == 4 + 5


async def test_round_trip_errors(fake: FakeAnthropic) -> None:
    a = adapter(base_url=fake.url)
    req = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    fake.inject(Fault(status=529, body=FakeAnthropic.error_body("overloaded_error", "Overloaded")),
                Fault(status=429, body=FakeAnthropic.error_body("rate_limit_error", "slow"),
                      headers={"retry-after": "9"}),
                Fault(body=FakeAnthropic.error_body("overloaded_error", "Overloaded")))
    status, headers, body = await send(a.build_request(req, "m", stream=True))
    assert isinstance(a.parse_error(status, headers, body), errors.Overloaded)
    status, headers, body = await send(a.build_request(req, "m", stream=True))
    e = a.parse_error(status, headers, body)
    assert isinstance(e, errors.RateLimited) and e.retry_after == 9
    status, _, raw = await send(a.build_request(req, "m", stream=True))
    assert status == 200
    tr = a.new_stream_translator(req, "m")
    with pytest.raises(errors.Overloaded):
        for ev in events(raw.decode()):
            tr.feed(ev)


async def test_fake_enforces_anthropic_rules(fake: FakeAnthropic) -> None:
    a = adapter(base_url=fake.url)
    good = a.build_request({"messages": [{"role": "user", "content": "hi"}]}, "m", stream=False)
    body = orjson.loads(good.body)

    async def post(b: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.post(good.url, data=orjson.dumps(b),
                                                        headers=headers or good.headers) as r:
            return r.status, await r.json()

    assert (await post({k: v for k, v in body.items() if k != "max_tokens"}))[1]["error"]["message"] == \
        "max_tokens: Field required"
    status, err = await post({**body, "messages": [{"role": "system", "content": "s"}, *body["messages"]]})
    assert status == 400 and "Unexpected role" in err["error"]["message"]
    status, err = await post({**body, "frequency_penalty": 1})
    assert status == 400 and "Extra inputs are not permitted" in err["error"]["message"]
    status, err = await post({**body, "messages": [*body["messages"], {"role": "assistant", "content": "x "}]})
    assert status == 400 and "trailing whitespace" in err["error"]["message"]
    status, err = await post(body, {**good.headers, "x-api-key": "wrong"})
    assert status == 401 and err["error"]["type"] == "authentication_error"
    assert isinstance(a.parse_error(status, {}, orjson.dumps(err)), errors.UpstreamAuthFailed)
    status, err = await post(body, {k: v for k, v in good.headers.items() if k != "anthropic-version"})
    assert status == 400
    new = adapter("2026-10-21", base_url=fake.url).build_request({"messages": [{"role": "user", "content": "hi"}]},
                                                                 "m", stream=False)
    status, err = await post({**body, "temperature": 1.0}, new.headers)
    assert status == 400 and err["error"]["message"] == "temperature: Extra inputs are not permitted"
    status, _ = await post(body, {**new.headers, "anthropic-version": "2023-06-01"})  # Bearer needs the new version
    assert status == 401


# ---------------------------------------------------------------- what the real API refuses
# Valid OpenAI requests that Anthropic answers with a 400: each is either converted to
# what Anthropic accepts, or refused before any call with the reason and the field.

TOOL_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"},
    {"role": "user", "content": "Summarise that in one sentence."},
]


def _body(req: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(adapter().build_request(req, "m", stream=False).body)


def test_tool_history_without_tools_declares_them_and_forbids_calls() -> None:
    body = _body({"messages": TOOL_HISTORY})
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}
    with_tools = _body({"messages": TOOL_HISTORY, "tools": [{"type": "function", "function": {"name": "x"}}]})
    assert [t["name"] for t in with_tools["tools"]] == ["x"] and "tool_choice" not in with_tools


def test_tool_result_without_its_call_is_refused_clearly() -> None:
    with pytest.raises(errors.BadRequest) as e:
        _body({"messages": [{"role": "user", "content": "hi"}, TOOL_HISTORY[2]]})
    assert e.value.param == "messages"


def test_tool_ids_outside_anthropics_pattern_are_mapped_consistently() -> None:
    body = _body({"messages": TOOL_HISTORY})
    use = body["messages"][1]["content"][0]
    result = body["messages"][2]["content"][0]
    assert use["id"] == result["tool_use_id"]
    assert use["id"].startswith("functions_get_weather_0_") and all(c.isalnum() or c in "_-" for c in use["id"])
    other = _body({"messages": [{**m, "tool_call_id": "functions.get_weather.0"} if m["role"] == "tool" else
                                ({**m, "tool_calls": [{**m["tool_calls"][0], "id": "functions.get_weather.0"}]}
                                 if m.get("tool_calls") else m) for m in TOOL_HISTORY]})
    assert other["messages"][1]["content"][0]["id"] != use["id"]  # same characters once mapped, other id
    plain = _body({"messages": [TOOL_HISTORY[0], {**TOOL_HISTORY[1], "tool_calls": [
        {**TOOL_HISTORY[1]["tool_calls"][0], "id": "call_abc-1"}]}, {**TOOL_HISTORY[2], "tool_call_id": "call_abc-1"}]})
    assert plain["messages"][1]["content"][0]["id"] == "call_abc-1"  # a valid id is left alone


@pytest.mark.parametrize("stop", ["\n", ["END", "\n\n"], [""], " "])
def test_whitespace_stop_sequences_are_refused_with_the_field(stop: Any) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        _body({"messages": [{"role": "user", "content": "hi"}], "stop": stop})
    assert e.value.param == "stop" and "whitespace" in e.value.message


@pytest.mark.parametrize("user, hashed", [
    ("tenant-42", False), ("ada@example.com", True), ("+44 20 7946 0958", True), ("x" * 300, True),
])
def test_user_id_that_looks_personal_is_hashed(user: str, hashed: bool) -> None:
    sent = _body({"messages": [{"role": "user", "content": "hi"}], "user": user})["metadata"]["user_id"]
    if hashed:
        assert sent != user and len(sent) == 64 and sent == _body(
            {"messages": [{"role": "user", "content": "hi"}], "user": user})["metadata"]["user_id"]
    else:
        assert sent == user


def test_empty_and_whitespace_only_content_is_not_sent() -> None:
    body = _body({"messages": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "\n"},
                                     {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "  "},
        {"role": "user", "content": "three"},
    ]})
    assert body["messages"] == [
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "one\n"}, {"type": "text", "text": "two"},
                                     {"type": "text", "text": "three"}]},
    ]


def test_stream_tool_call_without_input_has_json_arguments() -> None:
    tr = adapter().new_stream_translator({}, "m")
    sse = "".join(f"event: {k}\ndata: {json.dumps({'type': k, **v})}\n\n" for k, v in [
        ("message_start", {"message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "tool_use", "id": "toolu_1",
                                                               "name": "now", "input": {}}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {}),
    ])
    chunks = [c for ev in events(sse) for c in tr.feed(ev)]
    args = "".join(tc["function"]["arguments"] for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", []))
    assert args == "{}" and tr.tools_seen and tr.finish_reason == "tool_calls"
    assert tr.identity() == ("msg_1", tr.created, "m", None)


@pytest.mark.parametrize("code", ["enforced_spend_limit_reached", "contract_spend_limit_reached"])
def test_spend_limit_429_is_not_a_rate_limit(code: str) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "limit reached",
                                                    "details": {"error_code": code}}})
    e = adapter().parse_error(429, {"retry-after": "30"}, body)
    assert isinstance(e, errors.RateLimited) and not e.retryable and e.code == "upstream_quota_exhausted"
    plain = adapter().parse_error(429, {"retry-after": "30"}, orjson.dumps(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    assert plain.retryable and plain.retry_after == 30


async def test_fake_refuses_what_anthropic_refuses(fake: FakeAnthropic) -> None:
    """The fake is as strict as the API on these, and the adapter's output passes it."""
    a = adapter(base_url=fake.url)
    good = a.build_request({"messages": TOOL_HISTORY, "stop": ["END"], "user": "ada@example.com"}, "m", stream=False)
    status, _, body = await send(good)
    assert status == 200, body
    raw = orjson.loads(good.body)
    for bad, why in [
        ({k: v for k, v in raw.items() if k not in ("tools", "tool_choice")}, "must define tools"),
        ({**raw, "stop_sequences": ["\n"]}, "non-whitespace"),
        ({**raw, "metadata": {"user_id": "ada@example.com"}}, "email"),
        ({**raw, "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]}, "non-whitespace"),
    ]:
        async with aiohttp.ClientSession() as s, s.post(good.url, data=orjson.dumps(bad), headers=good.headers) as r:
            assert r.status == 400 and why in (await r.json())["error"]["message"], why


def test_image_media_types() -> None:
    def sent(url: str) -> dict[str, Any]:
        return _body({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]})["messages"][0]["content"][0]["source"]
    assert sent("data:image/jpg;base64,AAAA")["media_type"] == "image/jpeg"
    assert sent("data:image/webp;base64,AAAA")["media_type"] == "image/webp"
    with pytest.raises(errors.UnsupportedParameter) as e:
        sent("data:image/bmp;base64,AAAA")
    assert e.value.param == "messages[0].content[0].image_url"



def test_structured_outputs_and_effort_go_in_output_config() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
              "additionalProperties": False}
    body = _body({"messages": [{"role": "user", "content": "Who?"}], "reasoning_effort": "high",
                  "response_format": {"type": "json_schema", "json_schema": {"name": "who", "schema": schema,
                                                                             "strict": True}}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}, "effort": "high"}
    assert "response_format" not in body and "reasoning_effort" not in body
    assert "output_config" not in _body({"messages": [{"role": "user", "content": "x"}],
                                         "response_format": {"type": "text"}})


async def test_structured_outputs_round_trip_through_the_fake(fake: FakeAnthropic) -> None:
    a = adapter(base_url=fake.url)
    fake.text = '{"name":"Ada"}'
    req = {"messages": [{"role": "user", "content": "Who?"}],
           "response_format": {"type": "json_schema", "json_schema": {"name": "who", "schema": {"type": "object"}}}}
    status, _, body = await send(a.build_request(req, "claude-sonnet-4-6", stream=False))
    assert status == 200, body
    assert json.loads(a.parse_response(body, "m")["choices"][0]["message"]["content"]) == {"name": "Ada"}
