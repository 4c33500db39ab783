"""A fake OpenAI Chat Completions server, faithful to the documented wire format.

POST /v1/chat/completions with ``Authorization: Bearer <key>``; GET /v1/models.
Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``;
unknown request fields are refused (400 "Unrecognized request argument supplied"),
so a gateway extension field leaking upstream fails loudly. Streams send
``chat.completion.chunk`` events, a usage chunk with ``choices: []`` when
``stream_options.include_usage`` is set, then ``data: [DONE]``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from .base import Fault, FakeVendor, flatten_content, sse, words

KNOWN_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "service_tier", "store", "metadata",
    "reasoning_effort", "modalities", "prediction", "audio", "web_search_options",
    "functions", "function_call", "verbosity", "prompt_cache_key", "safety_identifier",
})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def oa_error(status: int, message: str, type_: str = "invalid_request_error",
             param: str | None = None, code: str | None = None,
             headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


class FakeOpenAI(FakeVendor):
    name = "openai"
    api_key = "sk-test-openai-0123456789"
    model_suffix = "-2024-07-18"  # OpenAI answers with a dated snapshot id
    known_fields = KNOWN_FIELDS
    default_text = "Hello from fake OpenAI."
    require_auth = True  # False: behave like a local server (Ollama, vLLM) that takes no key

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.get("/v1/models", self.models),
        ]

    # ------------------------------------------------------------------ auth/validation
    def check_auth(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth and not self.require_auth:
            return None
        if not auth:
            return oa_error(401, "You didn't provide an API key. You need to provide your API key "
                                 "in an Authorization header using Bearer auth.")
        if auth != f"Bearer {self.api_key}":
            given = auth.removeprefix("Bearer ")  # OpenAI quotes a masked part of the key it refused
            return oa_error(401, f"Incorrect API key provided: {given[:3]}{'*' * 8}{given[-4:]}. You can find "
                                 "your API key at https://platform.openai.com/account/api-keys.",
                            code="invalid_api_key")
        return None

    def validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return oa_error(400, "We could not parse the JSON body of your request.")
        for k in body:
            if k not in self.known_fields:
                return oa_error(400, f"Unrecognized request argument supplied: {k}")
        for req in ("model", "messages"):
            if req not in body:
                return oa_error(400, f"Missing required parameter: '{req}'.", param=req,
                                code="missing_required_parameter")
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return oa_error(400, "Invalid 'messages': empty array.", param="messages", code="empty_array")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return oa_error(400, f"Invalid value for 'messages[{i}].role'.", param=f"messages[{i}].role",
                                code="invalid_value")
        if "stream_options" in body and not body.get("stream"):
            return oa_error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            param="stream_options")
        return None

    # ------------------------------------------------------------------ answers
    def answer_text(self, body: dict[str, Any], fault: Fault) -> str:
        return fault.text if fault.text is not None else self.text

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(words(flatten_content(m.get("content"))) for m in body["messages"]) + 3

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        fault = self.next_fault()
        if (denied := self.check_auth(request)) is not None:
            return denied
        if (bad := self.validate(rec.body)) is not None:
            return bad
        if (pre := await self.apply_pre_fault(request, fault)) is not None:
            return pre
        body = rec.body
        text = self.answer_text(body, fault)
        n = int(body.get("n") or 1)
        model = body["model"] + self.model_suffix
        pt, ct = self.prompt_tokens(body), words(text)
        usage = {
            "prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        finish = "length" if body.get("max_tokens") and ct > body["max_tokens"] else "stop"
        if body.get("stream"):
            return await self.stream(request, fault, body, model, text, n, usage, finish)
        resp = {
            "id": "chatcmpl-fake123", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
            "usage": usage if fault.usage else None,
            "service_tier": "default", "system_fingerprint": "fp_fake",
        }
        return web.Response(body=orjson.dumps(resp), content_type="application/json",
                            headers={"x-ratelimit-remaining-requests": "9999", **fault.headers})

    def stream_error_event(self) -> bytes:
        # what OpenAI sends when a stream fails after it started (the SDK raises APIError on it)
        return sse({"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}})

    def chunk(self, model: str, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        c: dict[str, Any] = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": 1700000000,
                             "model": model, "system_fingerprint": "fp_fake", "choices": choices}
        if include_usage:
            c["usage"] = None
        return c

    async def stream(self, request: web.Request, fault: Fault, body: dict[str, Any], model: str, text: str,
                     n: int, usage: dict[str, Any], finish: str) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        events: list[bytes] = []
        for i in range(n):
            events.append(sse(self.chunk(model, [{"index": i, "delta": {"role": "assistant", "content": "",
                                                                         "refusal": None},
                                                   "logprobs": None, "finish_reason": None}], include_usage)))
        for p in pieces:
            for i in range(n):
                events.append(sse(self.chunk(model, [{"index": i, "delta": {"content": p}, "logprobs": None,
                                                       "finish_reason": None}], include_usage)))
        for i in range(n):
            events.append(sse(self.chunk(model, [{"index": i, "delta": {}, "logprobs": None,
                                                   "finish_reason": finish}], include_usage)))
        if include_usage and fault.usage:
            u = self.chunk(model, [], False)
            u["usage"] = usage
            events.append(sse(u))
        events.append(b"data: [DONE]\n\n")
        return await self.stream_events(request, fault, events)

    async def models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self.check_auth(request)) is not None:
            return denied
        data = [{"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]
        return web.json_response({"object": "list", "data": data})
