"""Server-sent events: parse upstream bytes into events; frame canonical chunks for clients.

Every vendor is asked for SSE (Gemini with ``alt=sse``), so this one parser serves all.
The parser follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; ``data``
lines of one event are joined with ``\\n``; comment lines (``:``) are ignored; an event is
dispatched on a blank line.

Byte substring tests here use ``find``, not ``in``: ``b"x" in data`` first tries ``b"x"``
as an integer and raises and clears a TypeError inside CPython each time, about 2,000
instructions (callgrind), on a path that runs for every streamed chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

try:  # Linux: the bytes a socket still holds for its peer (unsent or unacknowledged)
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - other platforms: the transport's buffer only
    _OUTQ = None


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None
    #: the data field's exact bytes when the event was a lone ``data:`` line (the common
    #: case), so an OpenAI-speaking vendor's chunk can be passed on without re-encoding
    raw: bytes | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEParser:
    """Incremental parser: ``feed(bytes) -> [SSEEvent]``; ``close() -> [SSEEvent]``."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_has_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._has_data = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._buf and not self._has_data and self._event is None and chunk.endswith(b"\n\n") \
                and chunk.find(b"\r") < 0:
            fast = self._fast(chunk)
            if fast is not None:
                return fast
        buf = self._buf + chunk if self._buf else chunk
        if buf.find(b"\r") >= 0:
            # Normalise CRLF and lone CR; keep a trailing CR (maybe half of CRLF).
            tail = b""
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events: list[SSEEvent] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            ev = self._line(line)
            if ev is not None:
                events.append(ev)
        self._buf = buf[start:]
        return events

    def single(self, chunk: bytes) -> bytes | None:
        """The value of ``chunk`` when it is exactly one ``data:`` line event and nothing is
        pending (what a vendor speaking OpenAI sends in each network piece), else None
        (``feed`` then)."""
        if (chunk[:5] == b"data:" and chunk[-2:] == b"\n\n" and chunk.find(b"\n") == len(chunk) - 2
                and not self._buf and not self._has_data and self._event is None and chunk.find(b"\r") < 0):
            return chunk[6:-2] if chunk[5:6] == b" " else chunk[5:-2]
        return None

    @staticmethod
    def _fast(chunk: bytes) -> list[SSEEvent] | None:
        """Whole ``data: ...`` events only (what vendors send): no line-by-line state machine."""
        out = []
        for block in chunk[:-2].split(b"\n\n"):
            if not block.startswith(b"data:") or block.find(b"\n") >= 0:
                return None
            value = block[6:] if block[5:6] == b" " else block[5:]
            out.append(SSEEvent(value.decode("utf-8", "replace"), raw=value))
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still dispatched."""
        events: list[SSEEvent] = []
        if self._buf:
            ev = self._line(self._buf.rstrip(b"\r"))
            self._buf = b""
            if ev is not None:
                events.append(ev)
        ev = self._line(b"")
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._has_data:
                self._event = None
                return None
            ev = SSEEvent("\n".join(self._data), self._event, self._id)
            self._data = []
            self._event = None
            self._has_data = False
            return ev
        if line[0] == 0x3A:  # ':' comment / keep-alive
            return None
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"id":
            self._id = value.decode("utf-8", "replace")
        return None


# ------------------------------------------------------------------ client-side framing
DONE = b"data: [DONE]\n\n"


def frame(chunk: bytes | dict[str, Any]) -> bytes:
    """One canonical chunk as an SSE ``data:`` event. ``bytes`` are already JSON."""
    if not isinstance(chunk, bytes):
        chunk = orjson.dumps(chunk)
    return b"data: " + chunk + b"\n\n"


def frame_error(envelope: dict[str, Any]) -> bytes:
    """An error event: the openai SDK raises ``APIError`` on a data object with ``error``."""
    return b"event: error\ndata: " + orjson.dumps(envelope) + b"\n\n"


#: a client that reads nothing of its stream for this long while the gateway has more to
#: send is gone (nginx's ``send_timeout`` default): its connection is closed, and the
#: upstream request with it, instead of holding both for as long as the client lingers
CLIENT_SEND_TIMEOUT = 60.0
#: while waiting on such a client, how often to look whether it took anything
SEND_POLL = 5.0


def _queued(transport: Any) -> int:
    """Bytes still on their way to the client: the transport's buffer and the socket's."""
    n = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            n += int.from_bytes(fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"), "little", signed=True)
    return n


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class SSEResponse(web.StreamResponse):
    """A streaming response whose headers leave with its first chunk (one write, one
    packet) instead of on their own: the first token reaches the client sooner.

    Later chunks skip aiohttp's general-purpose write path (compression, length
    clipping, body-size callbacks, three-part ``writelines``: four Python calls a chunk)
    when none of it applies: the chunk is framed (HTTP/1.1 chunked) and handed to the
    transport in one ``write``, and flow control still waits while the client's socket
    is full. If aiohttp's writer does not look as expected, every write takes the
    ordinary path."""

    _send_headers_immediately = False
    _direct: Any = None  # aiohttp's StreamWriter, once the direct path is known to be safe
    _transport: Any = None  # its transport then (the connection's, for the response's life)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._direct is None:
            await super().write(data)  # the first: nothing is queued before it
            self._direct = self._direct_writer()
            if self._direct is not None:
                self._transport = self._direct.transport
        elif not self.write_nowait(data):
            await self._client_reads(self._direct.drain())  # the client reads slower than we write

    @property
    def nowait(self) -> bool:
        """``write_nowait`` can be used: the first write went out and the direct path is safe."""
        return self._direct is not None

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Write now (only once ``nowait``); False when the client's buffer is full and
        ``drain()`` should be awaited before writing more."""
        w = self._direct
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if data:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            w.output_size += len(data)
        return not w._protocol._paused

    def write_event_nowait(self, payload: bytes) -> bool:
        """``write_nowait(frame(payload))`` in one step: one ``data:`` event (``payload``
        is its JSON), framed for SSE and as an HTTP chunk by one bytes format."""
        w = self._direct
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(b"%x\r\ndata: %b\n\n\r\n" % (len(payload) + 8, payload))
        w.output_size += len(payload) + 8
        return not w._protocol._paused

    def end_nowait(self, tail: bytes) -> None:
        """Best effort, without waiting: ``tail`` and the end of the chunked body, for a
        stream that must end now (its task is being cancelled)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(tail), tail))

    async def write_eof(self, data: bytes = b"") -> None:
        t = self._transport
        if t is not None and not self._eof_sent and (
                self._direct._protocol._paused
                or t.get_write_buffer_size() + len(data) + 32 > t.get_write_buffer_limits()[1]):
            await self._client_reads(super().write_eof(data))  # the client's buffer is (about to be) full
        else:
            # In this task's step, as every other write: an in-process client sees the end
            # only after what the handler does next (its log lines), and no task is made.
            await super().write_eof(data)

    async def drain(self) -> None:
        w = self._direct
        if w is not None and w._protocol._paused:
            await self._client_reads(w.drain())

    async def _client_reads(self, aw: Any) -> None:
        """Wait for the client to take what was written; give up on a client that takes
        nothing for ``CLIENT_SEND_TIMEOUT``. A slow reader is not cut: flow control only
        resumes once much of the socket's (auto-grown, megabytes) send queue has gone, so
        what is timed is the gap between two signs of reading, as nginx's send_timeout
        does, not the whole wait."""
        w = self._payload_writer
        transport = self._transport or (w.transport if w is not None else None)
        if transport is None:
            await aw
            return
        fut = asyncio.ensure_future(aw)
        try:
            queued, quiet = _queued(transport), 0.0
            while True:
                step = min(SEND_POLL, CLIENT_SEND_TIMEOUT - quiet)
                done, _ = await asyncio.wait((fut,), timeout=step)
                if done:
                    fut.result()
                    return
                now = _queued(transport)
                quiet = 0.0 if now < queued else quiet + step
                queued = now
                if quiet >= CLIENT_SEND_TIMEOUT:
                    transport.abort()
                    raise ConnectionResetError(f"the client read nothing for {CLIENT_SEND_TIMEOUT:g} s")
        finally:
            if not fut.done():
                fut.cancel()

    def _direct_writer(self) -> Any:
        w = getattr(self, "_payload_writer", None)
        try:
            ok = (w is not None and w.chunked is True and w._compress is None and w.length is None
                  and w._on_chunk_sent is None and w.on_body_write is None and w._headers_written
                  and isinstance(w._protocol._paused, bool) and hasattr(w, "drain"))
        except AttributeError:
            return None
        return w if ok else None
