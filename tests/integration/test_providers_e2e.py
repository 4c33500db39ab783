"""Every provider through the official openai SDK, stream and non-stream.

Asserts the text and usage that came back and the exact vendor request the fake
received: path, auth form, translated body, no gateway extension field leaked, and no
key in any log line.
"""

from __future__ import annotations

import openai
import pytest

from tests.fakes.base import Fault

EXTENSIONS = {"fallbacks", "task_type", "cache"}

CASES = {
    # provider: (model asked, fake fixture, expected text, prompt tokens for the messages below, path check)
    "openai": ("gpt-4o-mini", "fake_openai", "Hello from fake OpenAI.", 2 + 2 + 3),
    "anthropic": ("claude-3-5-haiku-latest", "fake_anthropic", "Hello from fake Claude.", 2 + 2 + 3),
    "gemini": ("gemini-2.0-flash", "fake_gemini", "Hello from fake Gemini.", 2 + 2 + 2),
    "mistral": ("mistral-small-latest", "fake_mistral", "Bonjour from fake Mistral.", 2 + 2 + 3),
}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def _walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def _check_vendor_request(provider, fake, stream):
    got = fake.last
    h = {k.lower(): v for k, v in got.headers.items()}
    if provider in ("openai", "mistral"):
        assert h["authorization"] == f"Bearer {fake.api_key}"
        assert got.path == "/v1/chat/completions"
        assert got.body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert got.body["temperature"] == 0.3
    elif provider == "anthropic":
        assert h["x-api-key"] == fake.api_key and h["anthropic-version"] == "2023-06-01"
        assert "authorization" not in h
        assert got.path == "/v1/messages"
        assert got.body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
        assert all(m["role"] != "system" for m in got.body["messages"])
        assert got.body["max_tokens"] == 64 and got.body["temperature"] == 0.3
    elif provider == "gemini":
        assert h["x-goog-api-key"] == fake.api_key
        assert fake.api_key not in got.path and "key" not in got.query
        suffix = ":streamGenerateContent" if stream else ":generateContent"
        assert got.path == "/v1beta/models/gemini-2.0-flash" + suffix
        if stream:
            assert got.query == {"alt": "sse"}
        assert got.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert got.body["generationConfig"]["maxOutputTokens"] == 64
        assert got.body["generationConfig"]["temperature"] == 0.3
    assert not EXTENSIONS & set(_walk_keys(got.body))
    if provider == "mistral":
        assert "stream_options" not in got.body


@pytest.mark.parametrize("provider", list(CASES))
async def test_non_stream(provider, request, gateway, vendor_env):
    model, fixture, text, prompt = CASES[provider]
    fake = request.getfixturevalue(fixture)
    gw = await gateway(vendor_env)
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, temperature=0.3, max_tokens=64,
        extra_body={"task_type": "text_generation", "cache": False, "fallbacks": []})
    resp = raw.parse()
    assert resp.choices[0].message.content == text
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == prompt
    assert resp.usage.completion_tokens == len(text.split())
    assert resp.usage.total_tokens == prompt + len(text.split())
    assert raw.headers["x-gateway-provider"] == provider
    assert raw.headers["x-gateway-model"] == model
    _check_vendor_request(provider, fake, stream=False)
    assert fake.api_key not in gw.log_text()


@pytest.mark.parametrize("provider", list(CASES))
async def test_stream(provider, request, gateway, vendor_env):
    model, fixture, text, prompt = CASES[provider]
    fake = request.getfixturevalue(fixture)
    gw = await gateway(vendor_env)
    stream = await gw.sdk().chat.completions.create(
        model=model, messages=MESSAGES, temperature=0.3, max_tokens=64, stream=True,
        stream_options={"include_usage": True}, extra_body={"cache": False})
    got, usage, finish, roles = "", None, None, []
    async for chunk in stream:
        for ch in chunk.choices:
            got += ch.delta.content or ""
            finish = ch.finish_reason or finish
            if ch.delta.role:
                roles.append(ch.delta.role)
        usage = chunk.usage or usage
    assert got == text
    assert finish == "stop"
    assert roles == ["assistant"]
    assert usage.prompt_tokens == prompt and usage.completion_tokens == len(text.split())
    assert usage.model_extra["cost"] > 0
    _check_vendor_request(provider, fake, stream=True)
    resp_line = gw.events("response")[-1]
    assert resp_line["provider"] == provider and resp_line["output_tokens"] == len(text.split())
    assert fake.api_key not in gw.log_text()


@pytest.mark.parametrize("model, provider", [
    ("claude", "anthropic"), ("anthropic/claude-3-5-haiku-20241022", "anthropic"), ("gemini", "gemini"),
    ("mistral/open-mistral-nemo", "mistral"), ("openai/gpt-4o-2099-01-01", "openai"),
])
async def test_model_forms(model, provider, gateway, vendor_env, fake_openai, fake_anthropic):
    gw = await gateway(vendor_env)
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-provider"] == provider


async def test_unsupported_parameter_is_400_before_any_call(gateway, vendor_env, fake_anthropic, fake_mistral):
    gw = await gateway(vendor_env)
    with pytest.raises(openai.BadRequestError) as ei:
        await gw.sdk().chat.completions.create(model="claude-3-5-haiku-latest", seed=3,
                                               messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["param"] == "seed"
    with pytest.raises(openai.BadRequestError) as ei:
        await gw.sdk().chat.completions.create(model="mistral-small-latest", user="u-1",
                                               messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["param"] == "user"
    assert fake_anthropic.requests == [] and fake_mistral.requests == []


async def test_mistral_seed_becomes_random_seed(gateway, vendor_env, fake_mistral):
    gw = await gateway(vendor_env)
    await gw.sdk().chat.completions.create(model="mistral-small-latest", seed=11, max_completion_tokens=9,
                                           messages=[{"role": "user", "content": "hi"}])
    assert fake_mistral.last.body["random_seed"] == 11 and "seed" not in fake_mistral.last.body
    assert fake_mistral.last.body["max_tokens"] == 9


async def test_anthropic_new_version_uses_bearer_and_rejects_temperature(gateway, vendor_env, fake_anthropic):
    gw = await gateway({**vendor_env, "ANTHROPIC_VERSION": "2026-10-21"})
    with pytest.raises(openai.BadRequestError) as ei:
        await gw.sdk().chat.completions.create(model="claude", temperature=0.5,
                                               messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["param"] == "temperature"
    assert fake_anthropic.requests == []
    await gw.sdk().chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    h = {k.lower(): v for k, v in fake_anthropic.last.headers.items()}
    assert h["authorization"] == f"Bearer {fake_anthropic.api_key}" and "x-api-key" not in h
    assert h["anthropic-version"] == "2026-10-21"


async def test_models_lists_configured_providers(gateway, vendor_env):
    gw = await gateway({k: v for k, v in vendor_env.items() if not k.startswith("GEMINI")})
    models = await gw.sdk().models.list()
    owners = {m.owned_by for m in models.data}
    assert owners == {"openai", "anthropic", "mistral"}


async def test_extra_openai_compatible_provider(gateway, fake_openai):
    config = f"""
[providers.local]
type = "openai"
base_url = "{fake_openai.url}/v1"
models = ["llama3.2"]
"""
    fake_openai.require_auth = False
    gw = await gateway({}, config=config)
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model="local/llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-provider"] == "local"
    assert "Authorization" not in fake_openai.last.headers  # no api_key_env: no key sent
    assert fake_openai.last.body["model"] == "llama3.2"
    models = await gw.sdk().models.list()
    assert "local/llama3.2" in [m.id for m in models.data]
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-provider"] == "local"


async def test_models_retrieve(gateway, vendor_env):
    gw = await gateway(vendor_env)
    m = await gw.sdk().models.retrieve("claude-3-5-haiku-latest")
    assert m.id == "claude-3-5-haiku-latest" and m.owned_by == "anthropic"
    with pytest.raises(openai.NotFoundError):
        await gw.sdk().models.retrieve("nope-1")
    for spelling in ("openai/gpt-4o-mini", "claude/claude-3-5-haiku-latest"):  # as chat completions take them
        m = await gw.sdk().models.retrieve(spelling)
        assert m.id == spelling
    with pytest.raises(openai.NotFoundError):
        await gw.sdk().models.retrieve("gemini/gpt-4o-mini")  # not that provider's model


async def test_extra_provider_without_stream_usage(gateway, fake_openai):
    fake_openai.require_auth = False
    config = f"""
[providers.old]
type = "openai"
base_url = "{fake_openai.url}/v1"
models = ["tiny"]
stream_usage = false
"""
    gw = await gateway({}, config=config)
    stream = await gw.sdk().chat.completions.create(
        model="old/tiny", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    assert "stream_options" not in fake_openai.last.body  # never sent to this server
    assert usage.completion_tokens > 0  # estimated from the text instead
    assert gw.events("response")[-1]["estimated"] is True


async def test_extra_provider_that_refuses_stream_options_is_asked_again_without(gateway, fake_openai):
    """An older OpenAI-compatible server (Ollama, vLLM before stream_options) refuses the
    field the gateway adds to learn a stream's usage: the stream is asked for again
    without it, and that provider's streams go without it from then on."""
    fake_openai.require_auth = False
    gw = await gateway({}, config=f'[providers.old]\ntype = "openai"\nbase_url = "{fake_openai.url}/v1"\n'
                                  'models = ["tiny"]\n')
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error",
        "param": None, "code": None}}))
    for q in ("hi", "again"):
        stream = await gw.sdk().chat.completions.create(model="old/tiny", messages=[{"role": "user", "content": q}],
                                                         stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == fake_openai.default_text
    assert ["stream_options" in r.body for r in fake_openai.requests] == [True, False, False]
    assert any(e["error_type"] == "stream_usage_unsupported" for e in gw.events("error"))


async def test_sdk_parse_with_a_claude_model(gateway, vendor_env, fake_anthropic):
    """The openai SDK's structured outputs (a pydantic model) reach Claude as
    output_config.format and come back parsed."""
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str

    gw = await gateway(vendor_env)
    fake_anthropic.text = '{"name":"Ada"}'
    out = await gw.sdk().chat.completions.parse(model="claude-3-5-haiku-latest", response_format=Person,
                                                 messages=[{"role": "user", "content": "Who wrote the first program?"}])
    assert out.choices[0].message.parsed == Person(name="Ada")
    fmt = fake_anthropic.last.body["output_config"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["properties"]["name"]["type"] == "string"


async def test_a_client_error_about_stream_options_does_not_turn_usage_off(gateway, vendor_env, fake_openai):
    """Only the field the gateway adds, refused by a server that predates it, turns it off:
    OpenAI refusing a client's own stream_options is that client's 400, nothing more."""
    gw = await gateway(vendor_env)
    fake_openai.inject(Fault(status=400, body={"error": {
        "message": "Unrecognized request argument supplied: stream_options.foo", "type": "invalid_request_error",
        "param": None, "code": None}}))
    async with gw.http.post(gw.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True, "foo": 1}}) as r:
        assert r.status == 400
    assert len(fake_openai.requests) == 1
    stream = await gw.sdk().chat.completions.create(model="gpt-4o-mini", stream=True,
                                                     messages=[{"role": "user", "content": "again"}])
    async for _ in stream:
        pass
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}  # still asked for
