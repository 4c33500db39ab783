"""Shared machinery for fake vendor servers: real aiohttp apps on loopback.

Each vendor fake (``openai.py``, ``anthropic.py``, ``gemini.py``, ``mistral.py``)
subclasses ``FakeVendor``, adds its routes and renders answers in its own documented
wire format. The base records every request it receives and plays injected faults:

    fake.inject(Fault(status=429, headers={"retry-after": "2"}), Fault(cut_after=3))

Faults are consumed one per request, in order; when none is queued the fake answers
normally. ``fake.requests`` holds what arrived (method, path, query, headers, json).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Fault:
    status: int | None = None  # answer with this HTTP status and ``body``
    body: Any = None  # dict (sent as JSON), bytes or str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer starts
    hang: bool = False  # never answer (until the client goes away)
    cut_after: int | None = None  # stream: drop the connection after N events
    stall_after: int | None = None  # stream: go silent after N events, connection open
    malformed_at: int | tuple[int, ...] | None = None  # stream: garbage before event N (0-based), or each of several
    malformed_glued: bool = False  # stream: that garbage and event N in one write (one network piece)
    error_at: int | None = None  # stream: an in-stream error event instead of event N
    hold_after: int | None = None  # stream: after N events wait for ``hold`` to be set, then go on
    hold: asyncio.Event | None = None
    no_done: bool = False  # stream: close cleanly without the terminal event
    text: str | None = None  # answer with this text instead of the default
    usage: bool = True  # include usage numbers in the answer (vendors that may omit it)
    refuse_connection: bool = False  # close the socket without an HTTP answer
    ping_after: int | None = None  # stream: after N events only keep-alives, every ``ping_every`` s
    ping: bytes = b": keep-alive\n\n"  # the vendor's keep-alive (a comment; Anthropic: event: ping)
    ping_every: float = 0.02


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON (or raw bytes when not JSON)


class FakeVendor:
    """Base for the fakes. Subclasses implement ``routes()``."""

    name = "fake"
    default_text = "Hello from the fake vendor."

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self.server: TestServer | None = None
        self.arrived = asyncio.Event()
        self.disconnected = asyncio.Event()  # a streaming client went away mid-answer
        self.text = self.default_text

    # ---------------------------------------------------------------- control
    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def next_fault(self) -> Fault:
        return self.faults.popleft() if self.faults else Fault()

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.arrived.clear()
        self.disconnected.clear()
        self.text = self.default_text

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    # ---------------------------------------------------------------- server
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(self.routes())
        return app

    async def start(self) -> str:
        self.server = TestServer(self.make_app(), host="127.0.0.1")
        await self.server.start_server()
        return self.url

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()

    # ---------------------------------------------------------------- helpers for subclasses
    async def record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(rec)
        self.arrived.set()
        return rec

    async def apply_pre_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Delay / hang / refuse / status faults common to every vendor."""
        if fault.refuse_connection:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the handler quietly
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.hang:
            await asyncio.Event().wait()
        if fault.status is not None and fault.status >= 300:
            body = fault.body
            if isinstance(body, dict | list):
                return web.Response(
                    status=fault.status, body=orjson.dumps(body), headers=fault.headers,
                    content_type="application/json",
                )
            return web.Response(status=fault.status, body=body or b"", headers=fault.headers)
        return None

    async def stream_events(
        self, request: web.Request, fault: Fault, events: list[bytes], headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        """Write pre-framed SSE events, applying cut/stall/malformed/no_done faults.

        The subclass passes every event including its terminal one last; ``no_done``
        drops that last event."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {}), **fault.headers})
        await resp.prepare(request)
        if fault.no_done:
            events = events[:-1]
        try:
            for i, ev in enumerate(events):
                if fault.cut_after is not None and i >= fault.cut_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if fault.stall_after is not None and i >= fault.stall_after:
                    await asyncio.Event().wait()
                if fault.ping_after is not None and i >= fault.ping_after:
                    while True:  # alive, by its keep-alives, but the answer never goes on
                        await resp.write(fault.ping)
                        await asyncio.sleep(fault.ping_every)
                if fault.hold_after is not None and i == fault.hold_after:
                    assert fault.hold is not None
                    await fault.hold.wait()
                malformed = fault.malformed_at
                if malformed is not None and i in (malformed if isinstance(malformed, tuple) else (malformed,)):
                    if fault.malformed_glued:
                        await resp.write(b"data: {this is not json\n\n" + ev)
                        await asyncio.sleep(0)
                        continue
                    await resp.write(b"data: {this is not json\n\n")
                if fault.error_at is not None and i == fault.error_at:
                    await resp.write(self.stream_error_event())
                    await resp.write_eof()
                    return resp
                await resp.write(ev)
                await asyncio.sleep(0)
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return resp

    def stream_error_event(self) -> bytes:
        """The vendor's in-stream error event (``Fault.error_at``)."""
        raise NotImplementedError(f"{self.name} has no in-stream error event in these fakes")


def sse(data: Any, event: str | None = None) -> bytes:
    """Frame one SSE event (``data`` dict → JSON)."""
    payload = data if isinstance(data, bytes) else (data.encode() if isinstance(data, str) else orjson.dumps(data))
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def words(text: str) -> int:
    """The fakes' own token count: whitespace-separated words (deterministic)."""
    return len(text.split())


def flatten_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(flatten_content(p.get("text") if isinstance(p, dict) else p) for p in content)
    if isinstance(content, dict):
        return flatten_content(content.get("text"))
    return str(content)
