"""The adapter seam: pure, synchronous translation between canonical and a vendor's wire.

Canonical means the OpenAI chat-completions shapes, as plain dicts parsed once with
orjson:

* request: ``{"model", "messages", "stream", "temperature", ...}`` — gateway extension
  fields (``fallbacks``, ``task_type``, ``cache``) are already removed, ``model`` is the
  vendor's model id. A last assistant message carrying ``"prefix": true`` asks the
  vendor to *continue* that text (assistant prefill); only adapters whose
  ``supports_prefill`` is true accept it.
* response: an OpenAI ``chat.completion`` object.
* stream chunk: an OpenAI ``chat.completion.chunk`` object — or ``bytes`` holding one
  already encoded as JSON, so a vendor that speaks OpenAI is passed through without
  re-encoding.

Usage is never emitted by a translator as a chunk: it is exposed as ``usage`` (OpenAI
shape) and the gateway writes the final usage chunk itself (with ``cost``) when the
client asked for one with ``stream_options.include_usage``.

All I/O lives elsewhere (``upstream.py``); an adapter may name a ``transport`` of its
own (the offline ``mock`` provider does) instead of the shared HTTP client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import GatewayError
from ..sse import SSEEvent

if TYPE_CHECKING:
    from ..settings import ProviderConfig, Settings

Chunk = bytes | dict[str, Any]

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False

    def __repr__(self) -> str:  # never show credentials, not even in a debugger dump
        hdrs = {k: ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        return f"UpstreamRequest({self.method} {self.url}, headers={hdrs}, body={len(self.body)} bytes)"


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream(Protocol):
    """An open streaming response: status and headers known, body read in pieces.

    A stream may also offer ``push(on_data, on_wake) -> bool`` and ``unpush()``
    (``upstream.HttpStream``): pieces handed to a callback as they arrive. It is
    optional; ``routing/stream.py`` reads a stream without it through ``next_chunk``."""

    status: int
    headers: Mapping[str, str]

    async def next_chunk(self) -> bytes:
        """The next piece of the body as it arrived; ``b""`` at its end. A broken body
        raises a ``GatewayError`` (UpstreamUnavailable)."""
        ...
    async def read(self) -> bytes: ...

    def close(self, complete: bool = False) -> None:
        """Let go of the response. ``complete``: its last event was read, only the end of
        the body may be missing, so the connection may wait a moment for it and be
        reused; otherwise it is closed now (which tells the vendor to stop generating)."""
        ...


class Transport(Protocol):
    async def send(self, req: UpstreamRequest, timeout: float) -> UpstreamResponse: ...
    async def open_stream(self, req: UpstreamRequest, timeout: float) -> UpstreamStream: ...


@dataclass(slots=True)
class StreamTranslator(ABC):
    """Per-stream state: vendor SSE events in, canonical chunks out.

    ``done`` turns true when the vendor's terminal event arrives ([DONE],
    ``message_stop``, a Gemini ``finishReason``...). ``text`` collects the content
    delivered so far (for estimation and stream recovery).
    """

    model: str
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False
    text: list[str] = field(default_factory=list)
    #: the first chunk's (id, created, model, system_fingerprint), from a vendor that
    #: speaks OpenAI; translators that build their chunks answer ``identity`` themselves
    head: tuple[Any, Any, Any, Any] | None = None
    #: a tool call has been streamed (such an answer is never spliced by stream recovery)
    tools_seen: bool = False
    #: the prompt tokens the vendor reported before the end (Anthropic's message_start):
    #: a stream cut before its usage still bills the prompt as counted, not as estimated
    prompt_tokens: int | None = None
    #: SSE event names the vendor sends only to keep the connection alive (SSE comments
    #: and blank lines never become events): they do not count as the stream's progress
    #: against STREAM_IDLE_TIMEOUT
    KEEPALIVE_EVENTS: ClassVar[frozenset[str]] = frozenset()

    def answer_complete(self, n: int) -> bool:
        """Every choice of the answer is in: the vendor's terminal event, or the finish
        reason (and, with several choices, the usage that follows the last one)."""
        return self.done or (self.finish_reason is not None and (n <= 1 or self.usage is not None))

    def identity(self) -> tuple[Any, Any, Any, Any]:
        """(id, created, model, system_fingerprint) of this stream's chunks, None where unknown."""
        return self.head or (None, None, None, None)

    @abstractmethod
    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Translate one upstream event. Raises ``GatewayError`` for an in-stream error
        event, and ``ValueError`` for a malformed event (the router may skip one)."""

    def feed_data(self, raw: bytes) -> list[Chunk]:
        """``feed`` for an event that is one ``data:`` line, given its bytes (the common
        case; a vendor that speaks OpenAI translates it without decoding it first)."""
        return self.feed(SSEEvent(raw.decode("utf-8", "replace"), raw=raw))

    def finish(self) -> list[Chunk]:
        """The upstream body ended. Returns any chunks still owed."""
        return []


class Adapter(ABC):
    """One vendor's wire format. Instances are built once at start-up per provider."""

    #: the adapter (wire format) name used in config ``type = "..."``
    kind: str = ""
    #: the vendor accepts a trailing assistant message to continue (prefill)
    supports_prefill: bool = False
    #: the vendor's answer to a prefill starts with the prefill text itself
    prefill_echoes_prefix: bool = False
    #: an own transport instead of the shared HTTP session (None: HTTP)
    transport: Transport | None = None

    def refuses_stream_usage(self, body: bytes) -> bool:
        """A streaming request's 4xx says the server does not take the usage request the
        adapter added: stop adding it (True: the request is worth sending again)."""
        return False

    def __init__(self, provider: ProviderConfig, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings
        self.name = provider.name

    @abstractmethod
    def build_request(self, req: dict[str, Any], model: str, *, stream: bool) -> UpstreamRequest:
        """Canonical request → the vendor's HTTP request (auth added here).

        Raises ``UnsupportedParameter`` naming any field the vendor (at its configured
        API version) cannot take: nothing is dropped silently."""

    @abstractmethod
    def parse_response(self, body: bytes, model: str) -> dict[str, Any]:
        """The vendor's JSON answer → an OpenAI ``chat.completion`` dict."""

    @abstractmethod
    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """A non-2xx answer → the fitting ``GatewayError`` (rate limits, auth, context...)."""

    @abstractmethod
    def new_stream_translator(self, req: dict[str, Any], model: str) -> StreamTranslator:
        """A fresh translator for one streamed answer."""

    def quota_exhausted(self, headers: Mapping[str, str]) -> float | None:
        """Seconds until the vendor's quota refills, when a *successful* answer's headers
        say it is used up (remaining 0); None otherwise. The router then cools the
        target down so ``auto`` and fallbacks go elsewhere instead of meeting a 429."""
        return None


def reject_unsupported(req: dict[str, Any], supported: frozenset[str], vendor: str) -> None:
    """Raise ``UnsupportedParameter`` for the first field ``vendor`` cannot take.

    ``None`` values count as absent (the OpenAI SDK never sends them, but curl users do)."""
    from ..errors import UnsupportedParameter

    for key, value in req.items():
        if key not in supported and value is not None:
            raise UnsupportedParameter(
                f"'{key}' is not supported by {vendor}; remove it or choose another model.",
                param=key,
            )


#: finish reasons in the OpenAI vocabulary
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header read that works on plain dicts too (tests pass dicts)."""
    v = headers.get(name)
    if v is None and not hasattr(headers, "getall"):
        low = name.lower()
        for k, val in headers.items():
            if k.lower() == low:
                return val
    return v


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP-date)."""
    ms = header(headers, "retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = header(headers, "retry-after")
    if not ra:
        return None
    ra = ra.strip()
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    import time as _time

    try:
        when = parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - _time.time())
