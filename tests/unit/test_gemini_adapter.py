"""GeminiAdapter: pure translation both ways, against golden files.

Golden files live in ``golden/gemini/``: ``request_*.json`` (canonical request in),
``response_*.json`` (Gemini answer in), ``stream_*.sse`` (a recorded Gemini stream, CRLF
framed); each has a ``*.expected.json`` beside it. After an intended change, rewrite
them with ``UPDATE_GOLDEN=1 pytest tests/unit/test_gemini_adapter.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from llm_gateway import errors
from llm_gateway.adapters.gemini import GeminiAdapter, parse_retry_delay, usage_from
from llm_gateway.adapters.gemini_schema import SKIP_SIGNATURE
from llm_gateway.settings import ProviderConfig, Secret, Settings
from llm_gateway.sse import SSEEvent, SSEParser

GOLDEN = Path(__file__).parent / "golden" / "gemini"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
KEY = "AIzaSy-unit-test-key-0123456789"
BASE = "https://generativelanguage.googleapis.com"


def adapter(api_version: str | None = "v1beta", base_url: str = BASE, prefill: bool | None = None,
            key: str | None = KEY) -> GeminiAdapter:
    p = ProviderConfig("gemini", "gemini", base_url, Secret(key) if key else None, api_version=api_version,
                       supports_prefill=prefill)
    return GeminiAdapter(p, Settings())


def body_of(req: dict[str, Any], model: str = "gemini-2.5-flash", **kw: Any) -> dict[str, Any]:
    return orjson.loads(adapter(**kw).build_request(req, model, stream=False).body)


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def check_golden(name: str, actual: Any) -> None:
    path = GOLDEN / f"{name}.expected.json"
    if UPDATE:
        path.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert path.exists(), f"missing golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert actual == orjson.loads(path.read_bytes())


def unstamp(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "created": 0}


def sse_events(name: str) -> list[SSEEvent]:
    parser = SSEParser()
    return parser.feed((GOLDEN / name).read_bytes()) + parser.close()


# ====================================================================== requests
@pytest.mark.parametrize("name", ["request_basic", "request_tools", "request_images"])
def test_request_golden(name: str) -> None:
    case = orjson.loads((GOLDEN / f"{name}.json").read_bytes())
    up = adapter().build_request(case["request"], case["model"], stream=case["stream"])
    check_golden(name, {"method": up.method, "url": up.url, "stream": up.stream,
                        "headers": {k: v for k, v in up.headers.items() if k != "x-goog-api-key"},
                        "body": orjson.loads(up.body)})
    assert up.headers["x-goog-api-key"] == KEY


def test_system_and_developer_go_to_system_instruction() -> None:
    b = body_of(chat({"role": "system", "content": "Be brief."}, user("Hi"),
                     {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]}))
    assert b["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    assert b["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_no_system_instruction_without_system_messages() -> None:
    assert "systemInstruction" not in body_of(chat(user("Hi")))


def test_roles_mapped_and_consecutive_turns_merged() -> None:
    b = body_of(chat(user("a"), user([{"type": "text", "text": "b"}]),
                     {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"},
                     {"role": "assistant", "content": ""}, user("e")))
    assert b["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_function_results_never_share_a_turn_with_text() -> None:
    b = body_of(chat(user("q"), {"role": "assistant", "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": "42"}, user("and?")))
    assert [c["role"] for c in b["contents"]] == ["user", "model", "user", "user"]
    assert b["contents"][2]["parts"] == [{"functionResponse": {"name": "f", "response": {"output": "42"}, "id": "x"}}]


def test_generation_config_mapping() -> None:
    g = body_of(chat(user("x"), max_tokens=10, max_completion_tokens=20, stop=["a", "b"], n=1))["generationConfig"]
    assert g == {"maxOutputTokens": 20, "stopSequences": ["a", "b"], "candidateCount": 1}
    assert "generationConfig" not in body_of(chat(user("x"), response_format={"type": "text"}))


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    g = body_of(chat(user("x"), response_format={"type": "json_schema",
                                                 "json_schema": {"name": "s", "strict": True, "schema": schema}}))
    assert g["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    with pytest.raises(errors.BadRequest) as e:
        body_of(chat(user("x"), response_format={"type": "json_schema", "json_schema": {"name": "s"}}))
    assert e.value.param == "response_format.json_schema.schema"


@pytest.mark.parametrize(("model", "effort", "expected"), [
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW"}),
    ("gemini-flash-latest", "minimal", {"thinkingLevel": "MINIMAL"}),
])
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    b = body_of(chat(user("x"), reasoning_effort=effort), model=model)
    assert b["generationConfig"]["thinkingConfig"] == expected


@pytest.mark.parametrize(("model", "effort"), [("gemini-3-pro-preview", "none"), ("gemini-2.5-flash", "minimal"),
                                               ("gemini-3-pro-preview", "xhigh"),  # no XHIGH ThinkingLevel
                                               ("gemini-2.5-pro", "none")])  # thinking cannot be turned off
def test_reasoning_effort_without_equivalent(model: str, effort: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        body_of(chat(user("x"), reasoning_effort=effort), model=model)
    assert e.value.param == "reasoning_effort"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    b = body_of(chat(user("x"), tools=[TOOL], tool_choice=choice))
    decl = {"name": "f", "parametersJsonSchema": TOOL["function"]["parameters"]}
    assert b["tools"] == [{"functionDeclarations": [decl]}]
    assert b["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_without_tools() -> None:
    assert "toolConfig" not in body_of(chat(user("x"), tool_choice="none"))
    with pytest.raises(errors.BadRequest) as e:
        body_of(chat(user("x"), tool_choice="required"))
    assert e.value.param == "tool_choice"


def calls(*ids: str, sig: str | None = None) -> dict[str, Any]:
    tcs = [{"id": i, "type": "function", "function": {"name": "f", "arguments": '{"n": 1}'}} for i in ids]
    if sig:
        tcs[0]["extra_content"] = {"google": {"thought_signature": sig}}
    return {"role": "assistant", "content": None, "tool_calls": tcs}


def test_thought_signature_sentinel_only_where_needed() -> None:
    msgs = [user("x"), calls("a", "b"), {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}]
    g3 = body_of(chat(*msgs), model="gemini-3-flash-preview")["contents"][1]["parts"]
    assert g3[0]["thoughtSignature"] == SKIP_SIGNATURE and "thoughtSignature" not in g3[1]
    g2 = body_of(chat(*msgs), model="gemini-2.5-flash")["contents"][1]["parts"]
    assert all("thoughtSignature" not in p for p in g2)
    kept = body_of(chat(user("x"), calls("a", sig="real"), {"role": "tool", "tool_call_id": "a", "content": "1"}),
                   model="gemini-3-flash-preview")["contents"][1]["parts"][0]
    assert kept == {"functionCall": {"name": "f", "args": {"n": 1}, "id": "a"}, "thoughtSignature": "real"}


def test_call_ids_go_back_on_v1beta_only() -> None:
    msgs = chat(user("x"), calls("a"), {"role": "tool", "tool_call_id": "a", "content": "1"})
    b = body_of(msgs)
    assert b["contents"][1]["parts"][0]["functionCall"]["id"] == "a"
    assert b["contents"][2]["parts"][0]["functionResponse"]["id"] == "a"
    v1 = orjson.loads(adapter(api_version="v1").build_request(msgs, "gemini-2.5-flash", stream=False).body)
    assert "id" not in v1["contents"][1]["parts"][0]["functionCall"]
    assert "id" not in v1["contents"][2]["parts"][0]["functionResponse"]


def test_tool_result_needs_matching_call() -> None:
    with pytest.raises(errors.BadRequest) as e:
        body_of(chat(user("x"), calls("a"), {"role": "tool", "tool_call_id": "zzz", "content": "1"}))
    assert e.value.param == "messages[2].tool_call_id"


def test_tool_result_name_field_is_a_fallback() -> None:
    b = body_of(chat(user("x"), calls("a"), {"role": "tool", "tool_call_id": "lost", "name": "g", "content": "1"}))
    assert b["contents"][2]["parts"] == [{"functionResponse": {"name": "g", "response": {"output": "1"}}}]


def test_tool_call_arguments_must_be_json_object() -> None:
    bad = calls("a")
    bad["tool_calls"][0]["function"]["arguments"] = "[1, 2"
    with pytest.raises(errors.BadRequest) as e:
        body_of(chat(user("x"), bad))
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"


def test_images_data_and_http_urls() -> None:
    parts = body_of(chat(user([
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a/b.png?sig=1"}},
        {"type": "image_url", "image_url": "https://x.test/noext"},
    ])))["contents"][0]["parts"]
    assert parts == [{"inlineData": {"mimeType": "image/webp", "data": "AAAA"}},
                     {"fileData": {"fileUri": "https://x.test/a/b.png?sig=1", "mimeType": "image/png"}},
                     {"fileData": {"fileUri": "https://x.test/noext"}}]


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "ultra"}},
     "messages[0].content[0].image_url.detail"),
    ({"type": "input_audio", "input_audio": {"data": "AA", "format": "opus"}},
     "messages[0].content[0].input_audio.format"),
    ({"type": "file", "file": {"file_id": "file-123"}}, "messages[0].content[0].file.file_id"),
    ({"type": "video_url", "video_url": {"url": "https://x"}}, "messages[0].content[0].type"),
])
def test_unsupported_content_parts(part: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        body_of(chat(user([part])))
    assert e.value.param == param


def test_mixed_image_detail_is_refused() -> None:
    img = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": d}}
           for d in ("low", "high")]
    with pytest.raises(errors.UnsupportedParameter) as e:
        body_of(chat(user(img)))
    assert e.value.param == "messages[0].content[1].image_url.detail"


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"42": 1}}, "logit_bias"),
    ({"user": "u-1"}, "user"),
    ({"safety_identifier": "u-1"}, "safety_identifier"),
    ({"metadata": {"a": "b"}}, "metadata"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"store": True}, "store"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"response_format": {"type": "grammar"}}, "response_format"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [user("x"), {"role": "assistant", "content": "The", "prefix": True}]}, "messages[1].prefix"),
])
def test_unsupported_parameters_are_named(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.UnsupportedParameter) as e:
        body_of({**chat(user("x")), **extra})
    assert e.value.param == param
    assert e.value.status == 400 and param.split("[")[0].split(".")[0] in e.value.message


def test_none_values_and_accepted_no_ops() -> None:
    b = body_of(chat(user("x"), user=None, logit_bias=None, logprobs=False, parallel_tool_calls=True,
                     modalities=["text"], stream_options={"include_usage": True}, stream=False))
    assert b == {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}


def test_prefill_when_the_provider_opts_in() -> None:
    a = adapter(prefill=True)
    assert a.supports_prefill and not adapter().supports_prefill
    b = orjson.loads(a.build_request(chat(user("x"), {"role": "assistant", "content": "The", "prefix": True}),
                                     "gemini-2.5-flash", stream=False).body)
    assert b["contents"][-1] == {"role": "model", "parts": [{"text": "The"}]}


# ====================================================================== URL, auth, version
def test_url_auth_header_and_key_never_in_url() -> None:
    up = adapter().build_request(chat(user("x")), "gemini-2.0-flash", stream=False)
    assert up.method == "POST" and not up.stream
    assert up.url == f"{BASE}/v1beta/models/gemini-2.0-flash:generateContent"
    assert up.headers["x-goog-api-key"] == KEY and up.headers["Content-Type"] == "application/json"
    assert KEY not in up.url and "key=" not in up.url and KEY not in repr(up)
    st = adapter().build_request(chat(user("x")), "gemini-2.0-flash", stream=True)
    assert st.stream and st.url == f"{BASE}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert KEY not in st.url


def test_api_version_and_base_url_settings() -> None:
    a = adapter(api_version="v1", base_url="http://127.0.0.1:9999/proxy")
    assert a.build_request(chat(user("x")), "models/gemini-2.5-pro", stream=False).url == \
        "http://127.0.0.1:9999/proxy/v1/models/gemini-2.5-pro:generateContent"
    assert adapter(api_version=None).url("gemini-2.5-pro", stream=False).startswith(f"{BASE}/v1beta/")


def test_no_key_no_header_and_bad_model_id() -> None:
    assert "x-goog-api-key" not in adapter(key=None).build_request(chat(user("x")), "gemini-x", stream=False).headers
    with pytest.raises(errors.BadRequest) as e:
        adapter().build_request(chat(user("x")), "../files/x", stream=False)
    assert e.value.param == "model"


# ====================================================================== responses
@pytest.mark.parametrize("name", ["response_thoughts", "response_multi", "response_tool_call", "response_no_usage"])
def test_response_golden(name: str) -> None:
    case = orjson.loads((GOLDEN / f"{name}.json").read_bytes())
    out = adapter().parse_response(orjson.dumps(case["gemini"]), case["model"])
    if "responseId" not in case["gemini"]:
        assert out["id"].startswith("chatcmpl-")
        out["id"] = "generated"
    check_golden(name, unstamp(out))


def test_response_thoughts_are_skipped_and_counted() -> None:
    case = orjson.loads((GOLDEN / "response_thoughts.json").read_bytes())
    out = adapter().parse_response(orjson.dumps(case["gemini"]), "asked")
    assert out["choices"][0]["message"]["content"] == "The answer is 4."
    assert out["usage"]["completion_tokens"] == 45
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": 40}
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 4} and out["usage"]["total_tokens"] == 57
    assert out["id"] == "mQ3TaPXyLMm2nvgPn8_e4Q4" and out["model"] == "gemini-2.5-pro"


def test_response_multiple_candidates_and_filters() -> None:
    case = orjson.loads((GOLDEN / "response_multi.json").read_bytes())
    out = adapter().parse_response(orjson.dumps(case["gemini"]), "gemini-2.0-flash")
    assert [(c["index"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "length"), (1, "content_filter"), (2, "content_filter")]
    assert out["choices"][1]["message"]["content"] == "" and out["model"] == "gemini-2.0-flash-001"


def test_response_tool_calls() -> None:
    case = orjson.loads((GOLDEN / "response_tool_call.json").read_bytes())
    out = adapter().parse_response(orjson.dumps(case["gemini"]), "gemini-3-pro-preview")
    ch = out["choices"][0]
    assert ch["finish_reason"] == "tool_calls" and out["model"] == "gemini-3-pro-preview"
    tcs = ch["message"]["tool_calls"]
    assert [t["id"] for t in tcs] == ["call_resp-tools-1_0_0", "call_resp-tools-1_0_1", "fc-77"]
    assert orjson.loads(tcs[1]["function"]["arguments"]) == {"city": "Rome", "units": {"c": True}}
    assert tcs[2]["function"]["arguments"] == "{}"
    assert tcs[0]["extra_content"] == {"google": {"thought_signature": "c2lnLTE="}} and "extra_content" not in tcs[1]
    assert out["usage"]["prompt_tokens"] == 33 and out["usage"]["completion_tokens"] == 27


def test_tool_call_round_trip_keeps_signature() -> None:
    case = orjson.loads((GOLDEN / "response_tool_call.json").read_bytes())
    msg = adapter().parse_response(orjson.dumps(case["gemini"]), "gemini-3-pro-preview")["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": t["id"], "content": "ok"} for t in msg["tool_calls"]]
    b = body_of(chat(user("q"), msg, *results), model="gemini-3-pro-preview")
    model_parts = b["contents"][1]["parts"]
    assert model_parts[0] == {"text": "Let me check both."}
    assert model_parts[1]["thoughtSignature"] == "c2lnLTE=" and "thoughtSignature" not in model_parts[2]
    assert [p["functionResponse"]["name"] for p in b["contents"][2]["parts"]] == ["get_weather", "get_weather", "noop"]


def test_missing_usage_is_none() -> None:
    out = adapter().parse_response(orjson.dumps({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}), "m")
    assert out["usage"] is None and out["choices"][0]["finish_reason"] == "stop"


def test_blocked_prompt_is_content_policy() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.0-flash"}
    with pytest.raises(errors.ContentPolicy) as e:
        adapter().parse_response(orjson.dumps(body), "gemini-2.0-flash")
    assert e.value.status == 400 and "PROHIBITED_CONTENT" in e.value.message and e.value.provider == "gemini"
    assert e.value.code == "content_policy_violation"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"{}", b'{"candidates": []}', b'{"candidates": [7]}',
                                 b'{"candidates": [{"content": {"parts": ["x"]}}]}'])
def test_malformed_response(raw: bytes) -> None:
    with pytest.raises(errors.UpstreamBadResponse):
        adapter().parse_response(raw, "m")


def test_error_object_in_a_200_body() -> None:
    body = orjson.dumps([{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}])
    with pytest.raises(errors.Overloaded):
        adapter().parse_response(body, "m")


def test_usage_from_defaults() -> None:
    assert usage_from(None) is None
    assert usage_from({"promptTokenCount": 3, "candidatesTokenCount": 2})["total_tokens"] == 5


# ====================================================================== streams
def run_stream(name: str, req: dict[str, Any] | None = None, model: str = "asked") -> tuple[Any, list[Any]]:
    tr = adapter().new_stream_translator(req or chat(user("x")), model)
    chunks = [c for ev in sse_events(name) for c in tr.feed(ev)]
    return tr, chunks + tr.finish()


def test_stream_text_golden() -> None:
    tr, chunks = run_stream("stream_text.sse")
    check_golden("stream_text", [unstamp(c) for c in chunks])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello there! How can I help?"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert tr.done and tr.finish_reason == "stop" and "".join(tr.text) == "Hello there! How can I help?"
    assert tr.usage == {"prompt_tokens": 6, "completion_tokens": 30, "total_tokens": 36,
                        "prompt_tokens_details": {"cached_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 22}}
    assert {c["id"] for c in chunks} == {"Xk3TaOb0Bq7ZnvgP0pPX8AQ"}
    assert {c["model"] for c in chunks} == {"gemini-2.5-flash"}
    assert all("usage" not in c for c in chunks)


def test_stream_function_call_golden() -> None:
    tr, chunks = run_stream("stream_function_call.sse")
    check_golden("stream_function_call", [unstamp(c) for c in chunks])
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert [(d["index"], d["id"], d["function"]["name"]) for d in deltas] == [
        (0, "call_fc-stream-1_0_0", "get_weather"), (1, "call_fc-stream-1_0_1", "get_weather")]
    assert deltas[0]["extra_content"] == {"google": {"thought_signature": "c2lnLXN0cmVhbQ=="}}
    assert orjson.loads(deltas[1]["function"]["arguments"]) == {"city": "Rome"}
    assert tr.done and tr.finish_reason == "tool_calls" and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert tr.usage["total_tokens"] == 65


def ev(obj: Any) -> SSEEvent:
    return SSEEvent(obj if isinstance(obj, str) else orjson.dumps(obj).decode())


def cand(i: int, text: str | None = None, finish: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"index": i}
    if text is not None:
        c["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish:
        c["finishReason"] = finish
    return c


def test_stream_waits_for_every_candidate() -> None:
    tr = adapter().new_stream_translator(chat(user("x"), n=2), "m")
    tr.feed(ev({"candidates": [cand(0, "a"), cand(1, "b")]}))
    out = tr.feed(ev({"candidates": [cand(0, "c", "STOP")]}))
    assert not tr.done and [c["choices"][0]["index"] for c in out] == [0, 0]
    out = tr.feed(ev({"candidates": [cand(1, None, "MAX_TOKENS")], "usageMetadata": {"promptTokenCount": 1}}))
    assert tr.done and out[-1]["choices"][0] == {"index": 1, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert tr.finish_reason == "stop" and tr.usage["prompt_tokens"] == 1


def test_stream_without_finish_reason_is_not_done() -> None:
    tr = adapter().new_stream_translator(chat(user("x")), "m")
    out = tr.feed(ev({"candidates": [cand(0, "partial")]}))
    assert len(out) == 2 and out[0]["model"] == "m" and not tr.done
    assert tr.finish() == [] and tr.usage is None and tr.finish_reason is None


def test_stream_safety_stop_and_empty_events() -> None:
    tr = adapter().new_stream_translator(chat(user("x")), "m")
    assert tr.feed(SSEEvent("")) == []
    out = tr.feed(ev({"candidates": [cand(0, None, "SAFETY")]}))
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, "content_filter"] and tr.done


def test_stream_error_event_raises_gateway_error() -> None:
    tr = adapter().new_stream_translator(chat(user("x")), "m")
    body = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}
    with pytest.raises(errors.RateLimited) as e:
        tr.feed(ev(body))
    assert e.value.retry_after == 3.0
    with pytest.raises(errors.UpstreamUnavailable):
        tr.feed(ev([{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}]))


def test_stream_blocked_prompt_and_bad_json() -> None:
    tr = adapter().new_stream_translator(chat(user("x")), "m")
    with pytest.raises(errors.ContentPolicy):
        tr.feed(ev({"promptFeedback": {"blockReason": "SAFETY"}}))
    with pytest.raises(ValueError):
        tr.feed(ev("{this is not json"))
    with pytest.raises(ValueError):
        tr.feed(ev("[1, 2]"))
    with pytest.raises(ValueError):
        tr.feed(ev({"candidates": [{"content": {"parts": [3]}}]}))


# ====================================================================== errors
def gerr(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return orjson.dumps({"error": err})


def retry(delay: Any) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


@pytest.mark.parametrize(("delay", "seconds"), [
    ("37s", 37.0), ("1.5s", 1.5), ("0.250s", 0.25), ("3.000000001s", 3.000000001),
    ({"seconds": "2", "nanos": 500000000}, 2.5), (4, 4.0), ("soon", None), (None, None),
])
def test_parse_retry_delay(delay: Any, seconds: float | None) -> None:
    assert parse_retry_delay(delay) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_with_retry_info() -> None:
    body = gerr(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}, retry("37s")])
    e = adapter().parse_error(429, {"Retry-After": "5"}, body)
    assert isinstance(e, errors.RateLimited) and e.retry_after == 37.0
    assert e.provider == "gemini" and e.upstream_status == 429 and "quota" in e.message


def test_rate_limit_retry_after_fallbacks() -> None:
    body = gerr(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
    assert adapter().parse_error(429, {"retry-after": "12"}, body).retry_after == 12.0
    assert adapter().parse_error(429, {}, body).retry_after is None
    date = adapter().parse_error(429, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, body).retry_after
    assert date is not None and date > 1000
    array = orjson.dumps([orjson.loads(gerr(429, "RESOURCE_EXHAUSTED", "x", [retry("0.250s")]))])
    assert adapter().parse_error(429, {}, array).retry_after == 0.25


@pytest.mark.parametrize(("status", "body", "cls"), [
    (400, gerr(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens "
                                        "allowed (1048576)."), errors.ContextTooLong),
    (400, gerr(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
     errors.BadRequest),
    (400, gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com"}]),
     errors.UpstreamAuthFailed),
    (400, gerr(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
     errors.UpstreamUnavailable),
    (401, gerr(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), errors.UpstreamAuthFailed),
    (403, gerr(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."), errors.UpstreamAuthFailed),
    (404, gerr(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta, or is not supported for "
                                 "generateContent."), errors.ModelNotFound),
    (404, gerr(404, "NOT_FOUND", "Requested entity was not found."), errors.NotFound),
    (413, b"Request Entity Too Large", errors.PayloadTooLarge),
    (500, gerr(500, "INTERNAL", "An internal error has occurred."), errors.UpstreamUnavailable),
    (503, gerr(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), errors.Overloaded),
    (503, gerr(503, "UNAVAILABLE", "The service is currently unavailable."), errors.UpstreamUnavailable),
    (504, gerr(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
     errors.UpstreamTimeout),
    (502, b"<html><body>Bad Gateway</body></html>", errors.UpstreamUnavailable),
    (418, b"", errors.BadRequest),
    (302, b"", errors.UpstreamBadResponse),
])
def test_parse_error_mapping(status: int, body: bytes, cls: type) -> None:
    e = adapter().parse_error(status, {}, body)
    assert type(e) is cls
    assert e.provider == "gemini" and e.upstream_status == status and e.message.strip()


def test_parse_error_keeps_vendor_message_and_flags() -> None:
    e = adapter().parse_error(400, {}, gerr(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: "
                                                                     "contents is not specified"))
    assert "contents is not specified" in e.message and not e.retryable and e.status == 400
    fp = adapter().parse_error(400, {}, gerr(400, "FAILED_PRECONDITION", "Gemini API free tier is not available "
                                                                         "in your country."))
    assert not fp.retryable and fp.status == 502


def test_parse_error_never_echoes_the_key() -> None:
    e = adapter().parse_error(400, {}, gerr(400, "INVALID_ARGUMENT", f"API key {KEY} not valid."))
    assert isinstance(e, errors.UpstreamAuthFailed) and KEY not in e.message
    assert e.status == 502 and e.code == "upstream_auth_failed"


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"null", b"[]", b'{"error": "flat string"}', b'"x"'])
def test_parse_error_never_crashes(body: bytes) -> None:
    assert isinstance(adapter().parse_error(500, {}, body), errors.UpstreamUnavailable)


def test_tool_results_go_in_the_order_of_their_calls() -> None:
    """OpenAI pairs results with calls by id, in any order; Gemini by position."""
    b = body_of(chat(user("x"), calls("c1", "c2", "c3"),
                     {"role": "tool", "tool_call_id": "c3", "content": "3"},
                     {"role": "tool", "tool_call_id": "c1", "content": "1"},
                     {"role": "tool", "tool_call_id": "c2", "content": "2"}))
    assert [p["functionResponse"]["response"]["output"] for p in b["contents"][2]["parts"]] == ["1", "2", "3"]


def test_system_messages_alone_are_refused_before_any_call() -> None:
    with pytest.raises(errors.BadRequest) as e:
        body_of(chat({"role": "system", "content": "You are terse."}))
    assert e.value.param == "messages"


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                                    "LANGUAGE", "OTHER", "FINISH_REASON_UNSPECIFIED"])
def test_failed_generation_is_never_a_complete_answer(reason: str) -> None:
    body = orjson.dumps({"candidates": [{**cand(0, "", reason), "finishMessage": "bad call"}]})
    with pytest.raises(errors.UpstreamBadResponse) as e:
        adapter().parse_response(body, "m")
    assert e.value.retryable and reason in e.value.message and "bad call" in e.value.message
    tr = adapter().new_stream_translator(chat(user("x")), "m")
    tr.feed(ev({"candidates": [cand(0, "partial")]}))
    with pytest.raises(errors.UpstreamBadResponse):
        tr.feed(ev({"candidates": [cand(0, None, reason)]}))
    assert not tr.done and tr.finish_reason is None


@pytest.mark.parametrize("status, gstatus", [(499, "CANCELLED"), (409, "ABORTED")])
def test_vendor_side_failures_are_not_the_callers(status: int, gstatus: str) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "The operation was cancelled.", "status": gstatus}})
    e = adapter().parse_error(status, {}, body)
    assert isinstance(e, errors.UpstreamUnavailable) and e.retryable


def test_with_several_choices_the_answer_is_complete_only_when_every_one_is() -> None:
    tr = adapter().new_stream_translator(chat(user("x"), n=2), "m")
    tr.feed(ev({"candidates": [cand(0, "The answer is "), cand(1, "42", "STOP")],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}}))
    assert tr.finish_reason == "stop" and tr.usage is not None  # from choice 1: not enough
    assert not tr.answer_complete(2) and not tr.done
    tr.feed(ev({"candidates": [cand(0, "42", "STOP")]}))
    assert tr.answer_complete(2) and tr.done
    one = adapter().new_stream_translator(chat(user("x")), "m")
    one.feed(ev({"candidates": [cand(0, "hi", "STOP")]}))
    assert one.answer_complete(1)
