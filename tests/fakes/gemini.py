"""A fake Gemini API server (generativelanguage.googleapis.com), faithful to the REST docs.

POST ``/{version}/models/{model}:generateContent`` and
``/{version}/models/{model}:streamGenerateContent`` (``?alt=sse`` for server-sent
events; without it Gemini answers one JSON array of responses). Auth by the
``x-goog-api-key`` header (or ``?key=``): missing → 403 PERMISSION_DENIED, wrong →
400 INVALID_ARGUMENT with ``ErrorInfo`` reason ``API_KEY_INVALID``. Every error uses
Google's envelope ``{"error": {"code", "message", "status", "details"}}``. Unknown
JSON fields are refused the protobuf-JSON way (``Invalid JSON payload received.
Unknown name "foo": Cannot find field.``), so a canonical OpenAI field leaking upstream
fails loudly. SSE events are ``data: {...}\\r\\n\\r\\n``; the last carries
``finishReason`` and ``usageMetadata`` (left out with ``Fault(usage=False)``).
A request whose toolConfig mode is ANY is answered with a ``functionCall``.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from aiohttp import web

from .base import FakeVendor, words

VERSIONS = frozenset({"v1", "v1beta", "v1alpha"})
REQUEST_FIELDS = frozenset({
    "contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig",
    "cachedContent", "serviceTier", "store",
})
GENERATION_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution",
})
PART_FIELDS = frozenset({
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature",
    "executableCode", "codeExecutionResult", "videoMetadata",
})


def google_error(code: int, status: str, message: str,
                 details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Google's error envelope (``google.rpc.Status`` as JSON)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return {"error": err}


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def rate_limited(delay: str = "37s") -> dict[str, Any]:
    """A documented-looking 429 body, for ``Fault(status=429, body=rate_limited())``."""
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}
    help_ = {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
        "description": "Learn more about Gemini API quotas",
        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}
    message = "You exceeded your current quota, please check your plan and billing details."
    return google_error(429, "RESOURCE_EXHAUSTED", message, [quota, help_, retry_info(delay)])


def g_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
    return web.Response(status=code, body=orjson.dumps(google_error(code, status, message, details)),
                        content_type="application/json")


def unknown_field(name: str, where: str | None = None) -> web.Response:
    at = f" at '{where}'" if where else ""
    msg = f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
    return g_error(400, "INVALID_ARGUMENT", msg, [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": where or "", "description": msg}]}])


class FakeGemini(FakeVendor):
    name = "gemini"
    api_key = "gemini-test-key-0123456789"
    default_text = "Hello from fake Gemini."

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/{version}/models/{tail}", self.handle)]

    # ------------------------------------------------------------------ checks
    def check_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return g_error(403, "PERMISSION_DENIED",
                           "Method doesn't allow unregistered callers (callers without established identity). "
                           "Please use API Key or other form of API consumer identity to call this API.")
        if key != self.api_key:
            return g_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        return None

    def validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return g_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.")
        for k in body:
            if k not in REQUEST_FIELDS:
                return unknown_field(k)
        for k in body.get("generationConfig") or {}:
            if k not in GENERATION_FIELDS:
                return unknown_field(k, "generation_config")
        contents = body.get("contents")
        if not contents:
            return g_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n")
        for i, c in enumerate(contents):
            if c.get("role", "user") not in ("user", "model"):
                return g_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
            if not c.get("parts"):
                return g_error(400, "INVALID_ARGUMENT",
                               f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n")
            for j, p in enumerate(c["parts"]):
                for k in p:
                    if k not in PART_FIELDS:
                        return unknown_field(k, f"contents[{i}].parts[{j}]")
        return None

    # ------------------------------------------------------------------ answers
    def prompt_tokens(self, body: dict[str, Any]) -> int:
        parts = [p for c in body["contents"] for p in c["parts"]]
        parts += (body.get("systemInstruction") or {}).get("parts") or []
        return sum(words(p.get("text") or "") for p in parts) + 2

    def function_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        cfg = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        if cfg.get("mode") != "ANY" or not decls:
            return None
        name = (cfg.get("allowedFunctionNames") or [decls[0]["name"]])[0]
        return {"name": name, "args": {"q": "fake"}}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        fault = self.next_fault()
        version = request.match_info["version"]
        model, _, method = request.match_info["tail"].partition(":")
        if version not in VERSIONS or method not in ("generateContent", "streamGenerateContent"):
            return g_error(404, "NOT_FOUND", "Method not found.")
        if (denied := self.check_auth(request)) is not None:
            return denied
        if not model.startswith(("gemini-", "gemma-")):
            return g_error(404, "NOT_FOUND", f"models/{model} is not found for API version {version}, or is not "
                                             "supported for generateContent. Call ListModels to see the list of "
                                             "available models and their supported methods.")
        if (bad := self.validate(rec.body)) is not None:
            return bad
        if (pre := await self.apply_pre_fault(request, fault)) is not None:
            return pre
        body = rec.body
        gen = body.get("generationConfig") or {}
        n = int(gen.get("candidateCount") or 1)
        text = fault.text if fault.text is not None else self.text
        finish = "STOP"
        if gen.get("maxOutputTokens") and words(text) > gen["maxOutputTokens"]:
            text, finish = " ".join(text.split()[: gen["maxOutputTokens"]]), "MAX_TOKENS"
        call = self.function_call(body)
        pt, ct = self.prompt_tokens(body), (2 if call else words(text)) * n
        usage = {"promptTokenCount": pt, "candidatesTokenCount": ct, "totalTokenCount": pt + ct,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": pt}]}
        head = {"modelVersion": model if model[-3:].isdigit() else f"{model}-001",
                "responseId": f"fakeResp{next(self._ids)}"}
        if method == "generateContent":
            parts = [{"functionCall": call}] if call else [{"text": text}]
            resp = {"candidates": [self.candidate(i, parts, finish) for i in range(n)], **head}
            if fault.usage:
                resp["usageMetadata"] = usage
            return web.Response(body=orjson.dumps(resp), content_type="application/json", headers=fault.headers)
        events = self.stream_bodies(text, call, n, finish, usage if fault.usage else None, head)
        if request.query.get("alt") != "sse":
            return web.Response(body=orjson.dumps(events), content_type="application/json", headers=fault.headers)
        framed = [b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events]
        return await self.stream_events(request, fault, framed)

    @staticmethod
    def candidate(i: int, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": i}
        if finish:
            c["finishReason"] = finish
        return c

    def stream_bodies(self, text: str, call: dict[str, Any] | None, n: int, finish: str,
                      usage: dict[str, Any] | None, head: dict[str, Any]) -> list[dict[str, Any]]:
        if call:
            pieces: list[list[dict[str, Any]]] = [[{"functionCall": call}]]
        else:
            ws = text.split(" ")
            pieces = [[{"text": w + (" " if k < len(ws) - 1 else "")}] for k, w in enumerate(ws)]
        events = []
        for k, parts in enumerate(pieces):
            last = k == len(pieces) - 1
            ev: dict[str, Any] = {"candidates": [self.candidate(i, parts, finish if last else None)
                                                 for i in range(n)], **head}
            if last and usage is not None:
                ev["usageMetadata"] = usage
            events.append(ev)
        return events
