"""The upstream HTTP client: aiohttp's client protocol and parser, with a lean request path.

Every vendor call goes through :class:`HttpTransport`, on one :class:`UpstreamPool` opened
for the app's life (``app.py`` cleanup_ctx). The wire work is aiohttp's own client
machinery — :class:`aiohttp.client_proto.ResponseHandler` (the protocol that
``ClientSession`` connections use) with its C ``HttpResponseParser``: status line and
header parsing, ``Content-Length`` / chunked bodies, gzip/deflate, flow control and the
``ClientPayloadError`` / ``ServerDisconnectedError`` it raises on a broken answer.

What is *not* used is ``ClientSession.request()`` and ``ClientRequest``/``ClientResponse``:
per call they merge default headers, consult a cookie jar and proxy settings, build a
request object through a dozen ``update_*`` steps, start timers and trace hooks — about
100 CPU-µs a call on our 2-core benchmark machine, a third of everything the gateway
spends on a request (bench/README.md, "Performance"). Here a request is one ``bytes``
built from a per-origin prefix and written with one system call, and the response is
read straight off the protocol: the same parser, a third of the cost.

The pool keeps idle keep-alive connections per origin (scheme, host, port) for
``KEEPALIVE_S``, caps the total at ``Settings.upstream_connection_limit`` (waiters are served in
order), connects within ``Settings.connect_timeout`` (TLS with the system's default context and
SNI), and never reuses a connection whose answer was not read to its end, that asked to
be closed, or that broke. A request is resent by the pool only when a reused connection
ends before a byte of its answer (the server closed it while idle, see ``_exchange``);
any other failure is the router's to retry (it knows the vendor's rules).

A streamed answer can also be read in *push mode* (``HttpStream.push``): each body piece
is handed to a callback as the parser produces it, inside ``data_received``, instead of
waking a task per piece; ``routing/stream.py`` uses it to write chunks on to the client
directly (a quarter less CPU and 40 % fewer instructions per streamed chunk,
bench/README.md). Its reader is aiohttp's ``StreamReader`` with that one addition
(``_PushReader``), so pull reads, flow control, decompression and errors are unchanged.

Transport failures become ``errors.UpstreamTimeout`` / ``errors.UpstreamUnavailable``;
the message names the kind of failure, never a URL with a secret or a header.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from . import errors
from .adapters.base import UpstreamRequest, UpstreamResponse
from .settings import Settings

#: idle keep-alive connections are closed after this long (aiohttp's default too); vendors
#: keep theirs open for a minute or more, so an idle one is rarely closed under us
KEEPALIVE_S = 15.0
_READ_BUFSIZE = 2**16
#: a stream whose last event is in may wait this long for the end of its body (the
#: chunked terminator often comes in a packet of its own), so its connection is reused
#: instead of closed: with a real vendor that saves a TCP and TLS handshake next time
LINGER_S = 1.0
#: sent unless the adapter set the same header; ``Host`` and ``Content-Length`` always
_DEFAULT_HEADERS = (("user-agent", "User-Agent: llm-gateway\r\n"), ("accept", "Accept: */*\r\n"),
                    ("accept-encoding", "Accept-Encoding: gzip, deflate\r\n"))
_BAD_HEADER_CHARS = frozenset("\r\n\0")
#: a request target keeps these as they are; anything else (spaces, controls, non-ASCII)
#: is percent-encoded, so no URL can break the request line
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"
#: resolved addresses are reused this long (aiohttp's connector default too)
DNS_TTL_S = 300.0


class _Handler(ResponseHandler):
    """aiohttp's client protocol, minus a per-chunk cost: its StreamReader calls
    ``resume_reading()`` after *every* read below the low-water mark, which re-enters the
    parser with ``b""`` and resumes the transport even when nothing was paused (3 Python
    calls per streamed chunk). Here that is done only when reading really was paused
    (the buffer or a pending decompression), which is when it has something to do."""

    #: push mode (:meth:`HttpStream.push`): body pieces go to ``push_data`` as they are
    #: parsed, ``push_wake`` is told of the body's end or failure
    push_data: Callable[[bytes], None] | None = None
    push_wake: Callable[[], None] | None = None
    #: taken from the idle pool, not connected for this request
    reused = False

    #: a byte of the current answer has arrived (a reused connection that fails before one
    #: did was closed by the server while idle: the request is resent, see ``_exchange``)
    got_data = False

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        ResponseHandler.data_received(self, data)


class _PushReader(StreamReader):
    """The body reader of a streamed answer, able to hand pieces on as they arrive.

    aiohttp's parser feeds a ``StreamReader`` and a task awaits ``readany()``: a future,
    a wake-up and a task step per streamed chunk, most of what a chunk costs. In push
    mode (the protocol's ``push_data`` set, nothing buffered) each piece goes straight
    to ``push_data`` inside ``data_received``, and the reading task sleeps until the
    end, a failure or its consumer needs it (``HttpStream.push``). Otherwise it is
    aiohttp's reader, unchanged. The same object layout (no new slots): a parsed
    body's reader is switched to this class in place.

    HTTP chunk boundaries are not tracked (``readchunk``/``iter_chunks`` are not used
    on these bodies; ``readany`` and ``read`` are)."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        push = self._protocol.push_data  # type: ignore[attr-defined]
        if push is None:
            return StreamReader.feed_data(self, data)
        if self._buffer:  # never while pushing (push() refuses then); order first, just in case
            StreamReader.feed_data(self, data)
            self._protocol.push_wake()  # type: ignore[attr-defined]
            return False
        if data:
            self.total_bytes += len(data)
            push(data)
        return False

    # The parser calls these around every HTTP chunk; chunk boundaries are not tracked
    # here. A C callable that takes no arguments (``tuple()``) instead of two Python
    # no-op methods: no frame per call, twice per streamed chunk.
    begin_http_chunk_receiving = end_http_chunk_receiving = tuple

    def feed_eof(self) -> None:
        StreamReader.feed_eof(self)
        wake = self._protocol.push_wake  # type: ignore[attr-defined]
        if wake is not None:
            wake()

    def set_exception(self, *args: Any, **kwargs: Any) -> None:
        StreamReader.set_exception(self, *args, **kwargs)
        wake = self._protocol.push_wake  # type: ignore[attr-defined]
        if wake is not None:
            wake()


class _Origin:
    """One scheme://host:port: its idle connections and the bytes every request to it starts with."""

    __slots__ = ("host", "port", "ssl", "server_hostname", "idle", "host_line", "addrs", "addrs_until",
                 "resolving")

    def __init__(self, scheme: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl = tls
        self.server_hostname = host if tls is not None else None
        self.idle: deque[tuple[_Handler, float]] = deque()
        default_port = 443 if scheme == "https" else 80
        hostport = f"[{host}]" if ":" in host else host
        if port != default_port:
            hostport = f"{hostport}:{port}"
        self.host_line = f"Host: {hostport}\r\n"
        self.addrs: list[tuple[int, str]] = []  # (family, address) from the last lookup
        self.addrs_until = 0.0
        self.resolving: asyncio.Future[list[tuple[int, str]]] | None = None  # one lookup at a time


class UpstreamPool:
    """Keep-alive connections to the vendors, shared by every request of one process."""

    def __init__(self, limit: int, connect_timeout: float, keepalive: float = KEEPALIVE_S,
                 clock: Any = time.monotonic, tls: ssl.SSLContext | None = None, linger: float = LINGER_S) -> None:
        self.limit = limit  # 0: no cap
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.linger = linger
        self.clock = clock
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, tuple[_Origin, str]] = {}  # url -> (origin, request target)
        self._open = 0  # connections open: in use and idle
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls = tls  # None: the system's default context, made on the first https URL
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._lingering: set[_Exchange] = set()  # finished streams waiting for their body's end
        self.deadline = _Deadlines()  # ``with pool.deadline(timeout):`` around one upstream call

    # ------------------------------------------------------------------ addressing
    def target(self, url: str) -> tuple[_Origin, str]:
        """The origin and request target (path and query) of ``url``; parsed once per URL."""
        hit = self._targets.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise errors.UpstreamUnavailable(f"unsupported upstream URL scheme {scheme!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(scheme, parts.hostname, port,
                                                  self._tls_context() if scheme == "https" else None)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        hit = (origin, quote(path, safe=_TARGET_SAFE))
        if len(self._targets) < 4096:  # adapters build a handful of distinct URLs
            self._targets[url] = hit
        return hit

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # system CAs, hostname checks (as aiohttp's)
        return self._tls

    # ------------------------------------------------------------------ connections
    async def acquire(self, origin: _Origin, fresh: bool = False) -> _Handler:
        """A connection to ``origin``: the most recently idle one, else (or when ``fresh``)
        a new one; ``proto.reused`` tells which."""
        if self._closed:
            raise errors.UpstreamUnavailable("the gateway is shutting down")
        while True:
            proto = None if fresh else self._take_idle(origin)
            if proto is not None:
                proto.reused = True
                return proto
            if not self.limit or self._open < self.limit:
                self._open += 1
                try:
                    return await self._connect(origin)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            if self._evict_one_idle():  # at the cap: an idle connection elsewhere makes room
                continue
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake()  # we were woken but leave: pass the turn on
                else:
                    try:
                        self._waiters.remove(fut)
                    except ValueError:
                        pass
                raise

    def release(self, origin: _Origin, proto: _Handler, reuse: bool) -> None:
        if reuse and not self._closed and proto.is_connected() and not proto.should_close:
            origin.idle.append((proto, self.clock()))
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)
        else:
            proto.close()
            self._open -= 1
        self._wake()

    def _take_idle(self, origin: _Origin) -> _Handler | None:
        idle = origin.idle
        now = self.clock()
        while idle:
            proto, since = idle.pop()  # the most recently used: the likeliest to be alive
            if proto.is_connected() and now - since < self.keepalive:
                return proto
            proto.close()
            self._open -= 1
        return None

    def _evict_one_idle(self) -> bool:
        oldest: _Origin | None = None
        for o in self._origins.values():
            if o.idle and (oldest is None or o.idle[0][1] < oldest.idle[0][1]):
                oldest = o
        if oldest is None:
            return False
        proto, _ = oldest.idle.popleft()
        proto.close()
        self._open -= 1
        return True

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _sweep(self) -> None:
        """Close connections idle for longer than the keep-alive time (runs while any are idle)."""
        self._sweeper = None
        now = self.clock()
        any_idle = False
        for o in self._origins.values():
            idle = o.idle
            while idle and (now - idle[0][1] >= self.keepalive or not idle[0][0].is_connected()):
                idle.popleft()[0].close()
                self._open -= 1
            any_idle = any_idle or bool(idle)
        if any_idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)
        self._wake()

    async def _connect(self, origin: _Origin) -> _Handler:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            addrs = await self._resolve(origin)
            err: OSError | None = None
            for family, addr in addrs:  # in the resolver's order, the next on a refusal
                try:
                    _, proto = await loop.create_connection(  # connection_made sets TCP_NODELAY
                        lambda: _Handler(loop), addr, origin.port, family=family,
                        ssl=origin.ssl, server_hostname=origin.server_hostname)
                    return proto
                except OSError as e:
                    err = e
            assert err is not None
            raise err

    async def _resolve(self, origin: _Origin) -> list[tuple[int, str]]:
        """The origin's addresses, looked up once per DNS_TTL_S (concurrent connects share
        one lookup) instead of once per new connection."""
        if origin.addrs and self.clock() < origin.addrs_until:
            return origin.addrs
        fut = origin.resolving
        if fut is None or fut.done():  # none yet, or a failed one: look up (again)
            fut = origin.resolving = asyncio.ensure_future(self._lookup(origin))
            fut.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(fut)  # one caller's timeout must not cancel the others' lookup
        finally:
            if fut.done() and origin.resolving is fut:
                origin.resolving = None

    async def _lookup(self, origin: _Origin) -> list[tuple[int, str]]:
        infos = await asyncio.get_running_loop().getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        addrs = list(dict.fromkeys((fam, sa[0]) for fam, _, _, _, sa in infos))
        if not addrs:
            raise OSError(f"no address for {origin.host}")
        origin.addrs, origin.addrs_until = addrs, self.clock() + DNS_TTL_S
        return addrs

    async def close(self) -> None:
        self._closed = True
        self.deadline.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for ex in list(self._lingering):
            ex.abandon()
        for o in self._origins.values():
            while o.idle:
                o.idle.popleft()[0].close()
                self._open -= 1
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(errors.UpstreamUnavailable("the gateway is shutting down"))

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return sum(len(o.idle) for o in self._origins.values())


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A lookup whose every waiter left still had its error looked at (no asyncio warning)."""
    if not fut.cancelled():
        fut.exception()


def make_pool(settings: Settings) -> UpstreamPool:
    return UpstreamPool(settings.upstream_connection_limit, settings.connect_timeout)


#: header blocks already checked and formatted, by the adapter's headers: an adapter sends
#: the same few header sets again and again (its key, its API version)
_header_blocks: dict[tuple[tuple[str, str], ...], str] = {}


def _header_block(headers: dict[str, str]) -> str:
    key = tuple(headers.items())
    block = _header_blocks.get(key)
    if block is not None:
        return block
    lines = []
    names = set()
    for k, v in headers.items():
        if not _BAD_HEADER_CHARS.isdisjoint(k) or not _BAD_HEADER_CHARS.isdisjoint(v):
            raise errors.BadRequest(f"a value for the upstream header {k!r} contains a line break")
        lines.append(f"{k}: {v}\r\n")
        names.add(k.lower())
    for name, line in _DEFAULT_HEADERS:
        if name not in names:
            lines.append(line)
    block = "".join(lines)
    if len(_header_blocks) < 256:
        _header_blocks[key] = block
    return block


def _request_bytes(req: UpstreamRequest, origin: _Origin, path: str) -> bytes:
    return (f"{req.method} {path} HTTP/1.1\r\n{origin.host_line}{_header_block(req.headers)}"
            f"Content-Length: {len(req.body)}\r\n\r\n").encode()


class _Exchange:
    """One request on one pooled connection; gives the connection back exactly once."""

    __slots__ = ("pool", "origin", "proto", "payload", "done", "abandon")

    def __init__(self, pool: UpstreamPool, origin: _Origin, proto: _Handler) -> None:
        self.pool = pool
        self.origin = origin
        self.proto = proto
        self.payload: StreamReader | None = None
        self.done = False
        self.abandon: Any = None  # while lingering: close the connection now (pool shutdown)

    def finish(self, linger: bool = False) -> None:
        """Back to the pool if the answer was read to its end, else closed. ``linger``: the
        caller has all it needs; wait up to ``pool.linger`` for the body's end first."""
        if self.done:
            return
        self.done = True
        proto = self.proto
        proto.push_data = proto.push_wake = None
        payload = self.payload
        if payload is None or payload.exception() is not None:
            self.pool.release(self.origin, self.proto, reuse=False)
        elif payload.is_eof():
            self.pool.release(self.origin, self.proto, reuse=True)
        elif linger and self.proto.is_connected():
            self._linger(payload)
        else:
            self.pool.release(self.origin, self.proto, reuse=False)

    def _linger(self, payload: StreamReader) -> None:
        released = False
        lingering = self.pool._lingering

        def release(reuse: bool) -> None:
            nonlocal released
            if not released:
                released = True
                timer.cancel()
                lingering.discard(self)
                self.pool.release(self.origin, self.proto, reuse=reuse and payload.exception() is None)

        self.abandon = lambda: release(False)  # type: ignore[method-assign]
        lingering.add(self)

        # Whatever else arrives is not read: past the read buffer the transport pauses, the
        # end never comes and the timer closes the connection.
        timer = asyncio.get_running_loop().call_later(self.pool.linger, release, False)
        payload.on_eof(lambda: release(True))


async def _exchange(pool: UpstreamPool, req: UpstreamRequest) -> tuple[_Exchange, Any]:
    """Write the request and wait for the response head: (exchange, RawResponseMessage).

    A server may close an idle keep-alive connection just as a request is written to it
    (its idle timeout, a deploy): the connection then ends before a byte of an answer.
    Such a request is sent again at once on a new connection; that is not a failed attempt
    (no backoff, no retry counted, no cool-down). The vendor may have read it before it
    closed (a crash, not an idle timeout), so a resend can in rare cases generate twice:
    the same risk the router's retry of any connection failure takes (the openai SDK's
    own retries do too); Go's client, stricter, resends a written POST only with an
    Idempotency-Key. Any other failure is the router's to judge."""
    origin, path = pool.target(req.url)
    head = _request_bytes(req, origin, path)
    try:
        return await _send_on(pool, origin, await pool.acquire(origin), head, req.body)
    except _Stale:
        return await _send_on(pool, origin, await pool.acquire(origin, fresh=True), head, req.body)


class _Stale(aiohttp.ServerDisconnectedError):
    """A reused connection ended before a byte of the answer (never leaves ``_exchange``:
    the second try is on a new connection)."""


async def _send_on(pool: UpstreamPool, origin: _Origin, proto: _Handler, head: bytes,
                   body: bytes) -> tuple[_Exchange, Any]:
    ex = _Exchange(pool, origin, proto)
    proto.got_data = False
    try:
        proto.set_response_params(read_until_eof=True, auto_decompress=True, read_bufsize=_READ_BUFSIZE)
        transport = proto.transport
        if transport is None:
            raise aiohttp.ServerDisconnectedError()
        if len(body) <= 65536:
            transport.write(head + body)  # one system call for the common small request
        else:
            transport.writelines((head, body))
        while True:
            message, payload = await proto.read()
            if message.code >= 200 or message.code == 101:
                break
            # 1xx informational answers precede the real one (ClientResponse.start does the same)
        ex.payload = payload
        return ex, message
    except _STALE as e:
        ex.finish()
        if proto.reused and not proto.got_data:
            raise _Stale() from e
        raise
    except BaseException:
        ex.finish()
        raise


class HttpStream:
    """An upstream answer read in pieces (SSE); ``close()`` gives the connection back."""

    __slots__ = ("_ex", "status", "headers")

    def __init__(self, ex: _Exchange, message: Any) -> None:
        self._ex = ex
        self.status: int = message.code
        self.headers: Mapping[str, str] = message.headers
        payload = ex.payload
        if type(payload) is StreamReader:
            try:
                payload.__class__ = _PushReader  # same layout: push mode becomes possible
            except TypeError:  # an aiohttp whose reader cannot be switched: pull reads only
                pass

    def push(self, on_data: Callable[[bytes], None], on_wake: Callable[[], None]) -> bool:
        """Push mode: from now on each body piece is passed to ``on_data`` as it is parsed
        (inside the protocol's ``data_received``: it must not raise), and ``on_wake`` is
        called at the body's end or on a failure, both found by ``next_chunk`` afterwards.
        False (nothing changed) when pieces are already waiting to be read, the body has
        ended or broken, or this answer's reader cannot push (``next_chunk`` then)."""
        payload = self._ex.payload
        if (type(payload) is not _PushReader or payload._buffer or payload._eof
                or payload._exception is not None or self._ex.done):
            return False
        proto = self._ex.proto
        proto.push_data, proto.push_wake = on_data, on_wake
        return True

    def unpush(self) -> None:
        """Back to pull mode: pieces wait in the reader for ``next_chunk`` again."""
        proto = self._ex.proto
        proto.push_data = proto.push_wake = None

    async def next_chunk(self) -> bytes:
        """The next piece as it arrived (one await, no async generator: this runs per chunk)."""
        try:
            data = await self._ex.payload.readany()  # type: ignore[union-attr]
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, HttpProcessingError) as e:
            raise errors.UpstreamUnavailable(f"the upstream stream broke: {type(e).__name__}") from None
        if not data:
            self._ex.finish()  # read to the end: the connection can serve the next request
        return data

    async def read(self) -> bytes:
        payload = self._ex.payload
        assert payload is not None
        try:
            data = await payload.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, HttpProcessingError) as e:
            self._ex.finish()
            raise errors.UpstreamUnavailable(f"the upstream answer broke: {type(e).__name__}") from None
        self._ex.finish()
        return data

    def close(self, complete: bool = False) -> None:
        self.unpush()
        self._ex.finish(linger=complete)


class _Deadline:
    """``asyncio.timeout()`` for the one task that sends a request: when its deadline
    passes the task is cancelled, and the cancellation leaves as ``TimeoutError``, unless
    someone else cancelled the task too. Made by :class:`_Deadlines` (no timer of its own)."""

    __slots__ = ("pending", "task", "when", "fired", "cancelling")

    def __init__(self, pending: dict[_Deadline, None], task: asyncio.Task[Any], when: float) -> None:
        self.pending = pending  # the pending deadlines of its length, in _Deadlines
        self.task = task
        self.when = when
        self.fired = False
        self.cancelling = task.cancelling()

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        self.pending.pop(self, None)
        if self.fired and self.task.uncancel() <= self.cancelling and et is asyncio.CancelledError:
            raise TimeoutError from None


class _Deadlines:
    """Every upstream call's deadline under one loop timer, not a timer handle each (one
    armed and cancelled per request cost ~16 CPU-us and ~19 us of latency at concurrency
    1 here, far above what it costs back to back).

    The deadlines of one length are due in the order they were set: each length keeps
    its pending ones in an insertion-ordered dict (a settled one is deleted at once, so
    only calls in flight are held). The one timer is armed for the earliest pending
    deadline and moved only when a new one comes sooner; when it fires it cancels what
    is due and is armed again for the earliest left."""

    #: a timer may run this early (libuv counts in milliseconds): a deadline within it is due
    SLACK = 0.001

    def __init__(self) -> None:
        self._by_length: dict[float, dict[_Deadline, None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __call__(self, timeout: float) -> _Deadline:
        """A deadline ``timeout`` seconds from now for the current task (``with`` it)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        pending = self._by_length.get(timeout)
        if pending is None:
            pending = self._by_length[timeout] = {}
        d = _Deadline(pending, task, loop.time() + timeout)
        pending[d] = None
        if d.when < self._timer_at:
            self._arm(d.when)
        return d

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)  # type: ignore[union-attr]

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        due = self._loop.time() + self.SLACK  # type: ignore[union-attr]
        nxt = math.inf
        for pending in self._by_length.values():
            fired = []
            for d in pending:
                if d.when > due:
                    nxt = min(nxt, d.when)
                    break
                fired.append(d)
            for d in fired:
                del pending[d]
                d.fired = True
                d.task.cancel()
        if nxt < math.inf:
            self._arm(nxt)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def pending(self) -> int:
        """Deadlines set and neither settled nor fired."""
        return sum(len(p) for p in self._by_length.values())


class HttpTransport:
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def send(self, req: UpstreamRequest, timeout: float) -> UpstreamResponse:
        try:
            with self.pool.deadline(timeout):
                ex, message = await _exchange(self.pool, req)
                try:
                    body = await ex.payload.read()  # type: ignore[union-attr]
                finally:
                    ex.finish()
        except _FAILURES as e:
            raise _failure(e, f"no answer within {timeout:g} s") from None
        return UpstreamResponse(message.code, message.headers, body)

    async def open_stream(self, req: UpstreamRequest, timeout: float) -> HttpStream:
        """Send and wait for the response head (status, headers) within ``timeout``."""
        try:
            with self.pool.deadline(timeout):
                ex, message = await _exchange(self.pool, req)
        except _FAILURES as e:
            raise _failure(e, f"no response head within {timeout:g} s") from None
        return HttpStream(ex, message)


_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, aiohttp.ClientResponseError,
           HttpProcessingError)
_FAILURES = (TimeoutError, *_BROKEN, OSError)
#: how a connection the server closed while idle fails: a clean close (FIN) or a reset
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _failure(e: BaseException, timeout_message: str) -> errors.GatewayError:
    """Connection, parser and timer failures → the gateway's retryable errors."""
    if isinstance(e, TimeoutError):
        return errors.UpstreamTimeout(timeout_message)
    if isinstance(e, _BROKEN):
        return errors.UpstreamUnavailable(f"the connection failed: {type(e).__name__}")
    assert isinstance(e, OSError)  # connect: refused, unreachable, DNS (gaierror), TLS (SSLError)
    return errors.UpstreamUnavailable(f"could not connect: {e.strerror or type(e).__name__}")
