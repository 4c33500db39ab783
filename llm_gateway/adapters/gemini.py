"""Google Gemini: ``generateContent`` / ``streamGenerateContent?alt=sse`` both ways.

Vendor format checked on 2026-11-26 against:

* the installed google-genai SDK 3.6.1 (``.venv/.../google/genai``): ``types.py``
  (FinishReason, BlockedReason, GenerateContentResponseUsageMetadata, FunctionDeclaration
  ``parameters_json_schema``, GenerationConfig ``response_json_schema``, ThinkingConfig),
  ``models.py`` (``_GenerateContentConfig_to_mldev``: the camelCase body; paths
  ``{model}:generateContent`` and ``{model}:streamGenerateContent?alt=sse``),
  ``_api_client.py`` (``x-goog-api-key`` header; SSE ``data:`` lines; an error body may
  be a JSON array of one object) and ``errors.py``. Note: google-genai 3.x defaults to
  the ``/v1`` path; the gateway keeps ``v1beta`` (SPEC 3), configurable as
  ``provider.api_version`` (``GEMINI_API_VERSION`` / ``[providers.gemini] api_version``).
* the ``search`` tool (docs/pages/issues corpora) for the REST reference and guides:
  GenerateContentRequest/Response, usageMetadata, finishReason values, the error
  envelope ``{"error": {"code", "message", "status", "details"}}`` with
  ``google.rpc.RetryInfo`` (``retryDelay`` as a Duration string such as ``"37s"``) and
  ``google.rpc.ErrorInfo`` (``API_KEY_INVALID``), the troubleshooting table (400
  INVALID_ARGUMENT / FAILED_PRECONDITION, 403, 404, 429, 500, 503, 504), public or
  signed http(s) URLs in ``fileData`` (Google's "increased file size limits" update)
  and Gemini 3 thought signatures (``skip_thought_signature_validator``).

Decisions:

* ``supports_prefill = False``: a trailing ``model`` turn is continued by some models
  (2.x, 3.5-flash) but refused by newer ones ("Requests ending with a model turn are not
  supported", 3.5-flash-lite, 3.6-flash; mid-2026), so it is not reliable. A provider
  may opt in with ``prefill = true``.
* Thought signatures travel in ``tool_calls[].extra_content.google.thought_signature``
  (the field Gemini's own OpenAI-compatible endpoint uses); a replayed call without one
  gets the sentinel on Gemini 3+ (and unversioned aliases).
* Tool-call ids: Gemini's ``functionCall.id`` when given, else
  ``call_<responseId>_<choice>_<n>``. Tool results are matched to names by id.
* Streams: ``done`` turns true once every expected candidate (``n``) has its
  ``finishReason``; ``text`` collects the text of every candidate.
* Errors: 400 FAILED_PRECONDITION (billing/region) is our account's problem, so it is
  an ``UpstreamUnavailable`` that is not retried (the router moves on); a 503 saying
  "overloaded" is ``Overloaded``; a 400 naming the API key is ``UpstreamAuthFailed``.
* ``prompt_tokens`` includes ``toolUsePromptTokenCount`` so that prompt + completion =
  total; ``completion_tokens`` includes thoughts (reported as reasoning_tokens).
"""

from __future__ import annotations

import email.utils
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from .. import errors
from ..errors import GatewayError
from ..sse import SSEEvent
from .base import Adapter, Chunk, StreamTranslator, UpstreamRequest
from .gemini_schema import build_body

#: Gemini finishReason → OpenAI finish_reason (anything else: "stop")
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "MODEL_ARMOR": "content_filter",
}
#: finishReason values that mean the generation failed or was cut by Gemini itself: such
#: an answer is never passed on as complete (SPEC 7); the attempt fails and is retried
FAILED_REASONS = frozenset({
    "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE",
    "LANGUAGE", "NO_IMAGE", "OTHER", "FINISH_REASON_UNSPECIFIED",
})
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONTEXT = re.compile(r"exceeds the maximum number of tokens|input token count|context window|too many tokens",
                      re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*s\s*$")


def finish_reason(gemini: str | None, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(gemini or "", "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def check_finished(cand: dict[str, Any]) -> None:
    """Raise for a candidate Gemini stopped because generating it failed."""
    reason = cand.get("finishReason")
    if reason in FAILED_REASONS:
        detail = f": {cand['finishMessage']}" if cand.get("finishMessage") else ""
        err = errors.UpstreamBadResponse(f"Gemini stopped generating the answer ({reason}){detail}",
                                         upstream_status=200)
        err.retryable = True  # sampling again usually succeeds
        raise err


def usage_from(meta: Any) -> dict[str, Any] | None:
    """Gemini ``usageMetadata`` → OpenAI ``usage`` (None when absent)."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(meta.get("totalTokenCount") or (prompt + completion)),
        "prompt_tokens_details": {"cached_tokens": int(meta.get("cachedContentTokenCount") or 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def tool_call(part: dict[str, Any], call_id: str) -> dict[str, Any]:
    fc = part["functionCall"]
    call: dict[str, Any] = {
        "id": fc.get("id") or call_id,
        "type": "function",
        "function": {"name": fc.get("name", ""), "arguments": orjson.dumps(fc.get("args") or {}).decode()},
    }
    if part.get("thoughtSignature"):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def parse_retry_delay(value: Any) -> float | None:
    """``"37s"``, ``"1.5s"``, ``"0.250s"``, ``{"seconds": 37, "nanos": 5e8}`` or a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        return float(m.group(1)) if m else None
    if isinstance(value, dict):
        try:
            return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class GeminiAdapter(Adapter):
    kind = "gemini"
    supports_prefill = False

    def __init__(self, provider: Any, settings: Any) -> None:
        super().__init__(provider, settings)
        if provider.supports_prefill is not None:
            self.supports_prefill = provider.supports_prefill
        self.api_version = (provider.api_version or "v1beta").strip("/")

    # ------------------------------------------------------------------ request
    def url(self, model: str, *, stream: bool) -> str:
        model = model.removeprefix("models/")
        if not _MODEL_ID.match(model):
            raise errors.BadRequest(f"'{model}' is not a valid Gemini model id.", param="model")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.provider.base_url}/{self.api_version}/models/{quote(model)}:{method}"

    def build_request(self, req: dict[str, Any], model: str, *, stream: bool) -> UpstreamRequest:
        body = build_body(req, model.removeprefix("models/"), allow_prefill=self.supports_prefill,
                          call_ids=self.api_version != "v1")
        headers = {"Content-Type": "application/json"}
        if stream:
            headers["Accept"] = "text/event-stream"
        if self.provider.api_key:
            headers["x-goog-api-key"] = self.provider.api_key.get()  # never ?key=: URLs get logged
        return UpstreamRequest("POST", self.url(model, stream=stream), headers, orjson.dumps(body), stream)

    # ------------------------------------------------------------------ response
    def parse_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._bad("Gemini answered with invalid JSON.") from None
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if not isinstance(data, dict):
            raise self._bad("Gemini answered with an unexpected JSON shape.")
        if "error" in data:
            raise self.parse_error(_code(data), {}, body)
        self._check_blocked(data)
        try:
            return self._completion(data, model)
        except (AttributeError, TypeError, ValueError) as e:
            raise self._bad(f"Gemini answered with an unexpected shape: {e}") from None

    def _completion(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        rid = data.get("responseId") or uuid.uuid4().hex[:24]
        choices = []
        for pos, cand in enumerate(data.get("candidates") or []):
            check_finished(cand)
            idx = int(cand.get("index", pos))
            texts, calls = [], []
            for part in (cand.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue
                if "functionCall" in part:
                    calls.append(tool_call(part, f"call_{rid}_{idx}_{len(calls)}"))
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
            content = "".join(texts) if texts or not calls else None
            msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if calls:
                msg["tool_calls"] = calls
            choices.append({"index": idx, "message": msg, "logprobs": None,
                            "finish_reason": finish_reason(cand.get("finishReason"), bool(calls))})
        if not choices:
            raise self._bad("Gemini answered without candidates.")
        choices.sort(key=lambda c: c["index"])
        return {
            "id": data.get("responseId") or f"chatcmpl-{rid}", "object": "chat.completion",
            "created": int(time.time()), "model": data.get("modelVersion") or model, "choices": choices,
            "usage": usage_from(data.get("usageMetadata")),
        }

    def _check_blocked(self, data: dict[str, Any]) -> None:
        fb = data.get("promptFeedback") or {}
        if fb.get("blockReason") and not data.get("candidates"):
            extra = f": {fb['blockReasonMessage']}" if fb.get("blockReasonMessage") else ""
            raise errors.ContentPolicy(f"Gemini refused the prompt (blockReason {fb['blockReason']}){extra}",
                                       provider=self.name, upstream_status=200)

    def _bad(self, message: str) -> GatewayError:
        return errors.UpstreamBadResponse(message, provider=self.name)

    # ------------------------------------------------------------------ errors
    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        err = _error_object(body)
        gstatus = str(err.get("status") or "")
        details = [d for d in err.get("details") or [] if isinstance(d, dict)]
        reasons = {str(d.get("reason")) for d in details if str(d.get("@type", "")).endswith("ErrorInfo")}
        vendor = self._scrub(str(err.get("message") or "").strip()) or f"HTTP {status}"
        kw: dict[str, Any] = {"provider": self.name, "upstream_status": status}
        text = f"Gemini: {vendor}"

        if status == 429 or gstatus == "RESOURCE_EXHAUSTED":
            return errors.RateLimited(text, retry_after=_retry_delay(details, headers), **kw)
        key_refused = any(r.startswith("API_KEY") for r in reasons) or "api key" in vendor.lower()
        if key_refused or status in (401, 403) or gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            why = ", ".join(sorted(r for r in reasons if r != "None")) or gstatus or f"HTTP {status}"
            # The vendor's words stay in the log: they can quote a masked part of the key.
            return errors.UpstreamAuthFailed(f"Gemini refused the gateway's API key ({why}); check its API key.",
                                             detail=text, **kw)
        if status == 404 or gstatus == "NOT_FOUND":
            cls = errors.ModelNotFound if "model" in vendor.lower() else errors.NotFound
            return cls(text, **kw)
        if status == 413:
            return errors.PayloadTooLarge(text, **kw)
        if status == 504 or gstatus == "DEADLINE_EXCEEDED":
            return errors.UpstreamTimeout(text, **kw)
        if status == 503 or gstatus == "UNAVAILABLE":
            if "overload" in vendor.lower():
                return errors.Overloaded(text, retry_after=_retry_delay(details, headers), **kw)
            return errors.UpstreamUnavailable(text, retry_after=_retry_delay(details, headers), **kw)
        if status >= 500 or status == 499 or gstatus in ("CANCELLED", "ABORTED", "INTERNAL", "UNKNOWN"):
            return errors.UpstreamUnavailable(text, **kw)  # the vendor's side, not the caller's request
        if gstatus == "FAILED_PRECONDITION":  # billing / region: our account, not the caller
            e = errors.UpstreamUnavailable(text, **kw)
            e.retryable = False
            return e
        if 400 <= status < 500:
            if _CONTEXT.search(vendor):
                return errors.ContextTooLong(text, **kw)
            return errors.BadRequest(text, **kw)
        return errors.UpstreamBadResponse(f"Gemini answered HTTP {status}: {vendor}", **kw)

    def _scrub(self, message: str) -> str:
        key = self.provider.api_key.get() if self.provider.api_key else ""
        if key and key in message:
            message = message.replace(key, "***")
        return message[:1000]

    # ------------------------------------------------------------------ streams
    def new_stream_translator(self, req: dict[str, Any], model: str) -> StreamTranslator:
        return GeminiStreamTranslator(model=model, expected=int(req.get("n") or 1),
                                      on_error=self.parse_error, on_block=self._check_blocked)


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        inner = data.get("error", data)
        return inner if isinstance(inner, dict) else {"message": str(inner)}
    return {}


def _code(data: dict[str, Any]) -> int:
    try:
        return int((data.get("error") or {}).get("code") or 500)
    except (TypeError, ValueError, AttributeError):
        return 500


def _retry_delay(details: list[dict[str, Any]], headers: Mapping[str, str]) -> float | None:
    for d in details:
        if str(d.get("@type", "")).endswith("RetryInfo"):
            delay = parse_retry_delay(d.get("retryDelay"))
            if delay is not None:
                return delay
    return _retry_after_header(headers)


@dataclass(slots=True)
class _Choice:
    started: bool = False
    finished: bool = False
    calls: int = 0


@dataclass(slots=True)
class GeminiStreamTranslator(StreamTranslator):
    """``data: <GenerateContentResponse>`` events (no [DONE]) → chat.completion.chunk dicts."""

    expected: int = 1
    on_error: Callable[[int, Mapping[str, str], bytes], GatewayError] | None = None
    on_block: Callable[[dict[str, Any]], None] | None = None
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    answered_model: str = ""
    choices: dict[int, _Choice] = field(default_factory=dict)

    def feed(self, event: SSEEvent) -> list[Chunk]:
        raw = event.data.strip()
        if not raw:
            return []
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError(f"Gemini stream event is not JSON: {raw[:80]!r}") from None
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if not isinstance(data, dict):
            raise ValueError("Gemini stream event is not a JSON object")
        if "error" in data:
            if self.on_error is None:
                raise errors.UpstreamBadResponse(f"Gemini stream error: {raw[:200]}")
            raise self.on_error(_code(data), {}, raw.encode())
        if self.on_block is not None:
            self.on_block(data)
        self.id = self.id or data.get("responseId") or f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.answered_model = data.get("modelVersion") or self.answered_model or self.model
        if data.get("usageMetadata") is not None:
            self.usage = usage_from(data["usageMetadata"])
        out: list[Chunk] = []
        try:
            for pos, cand in enumerate(data.get("candidates") or []):
                out.extend(self._candidate(int(cand.get("index", pos)), cand))
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"Gemini stream event has an unexpected shape: {e}") from None
        seen = self.choices.values()
        if len(seen) >= max(1, self.expected) and all(c.finished for c in seen):
            self.done = True  # Gemini has no [DONE]: every candidate has its finishReason
        return out

    def _candidate(self, idx: int, cand: dict[str, Any]) -> list[Chunk]:
        st = self.choices.setdefault(idx, _Choice())
        out: list[Chunk] = []
        if not st.started:
            st.started = True
            out.append(self._chunk(idx, {"role": "assistant", "content": ""}))
        for part in (cand.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if "functionCall" in part:
                call = tool_call(part, f"call_{self.id}_{idx}_{st.calls}")
                self.tools_seen = True
                out.append(self._chunk(idx, {"tool_calls": [{"index": st.calls, **call}]}))
                st.calls += 1
            elif isinstance(part.get("text"), str) and part["text"]:
                if idx == 0:  # choice 0 is the one estimated, cached and recovered
                    self.text.append(part["text"])
                out.append(self._chunk(idx, {"content": part["text"]}))
        if cand.get("finishReason") and not st.finished:
            check_finished(cand)
            st.finished = True
            reason = finish_reason(cand["finishReason"], st.calls > 0)
            if idx == 0 or self.finish_reason is None:
                self.finish_reason = reason
            out.append(self._chunk(idx, {}, reason))
        return out

    def identity(self) -> tuple[Any, Any, Any, Any]:
        return self.id or None, self.created, self.answered_model or self.model, None

    def answer_complete(self, n: int) -> bool:
        # usageMetadata comes on every event and finish_reason from any choice: with
        # several choices only ``done`` (every candidate finished) says the answer is in
        return self.done or (n <= 1 and 0 in self.choices and self.choices[0].finished)

    def _chunk(self, idx: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.answered_model or self.model,
                "choices": [{"index": idx, "delta": delta, "logprobs": None, "finish_reason": finish}]}
