"""The upstream client (upstream.py) against a scripted HTTP/1.1 server on loopback.

Each test's server reads real requests off the socket and answers with the bytes the
test gives it, so keep-alive, ``Connection: close``, chunked and gzip bodies, 1xx
answers, broken streams, the connection cap and TLS are checked on the wire.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from llm_gateway import errors
from llm_gateway.adapters.base import UpstreamRequest
from llm_gateway.upstream import HttpTransport, UpstreamPool, _Deadlines

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection open?


class Script:
    """A loopback HTTP/1.1 server: parses each request, answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []  # head + body, as received
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.reply(head + body, writer):
                    return
        except asyncio.CancelledError:
            return  # stop(): ends the handler quietly (3.11's start_server logs a cancelled one)
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def answer(data: bytes, keep: bool = True) -> Reply:
    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(data)
        await w.drain()
        return keep
    return reply


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Script]]]:
    started: list[Script] = []

    async def start(reply: Reply, tls: ssl.SSLContext | None = None) -> Script:
        s = Script(reply)
        await s.start(tls)
        started.append(s)
        return s

    yield start
    for s in started:
        await s.stop()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    p = UpstreamPool(limit=10, connect_timeout=5)
    yield p
    await p.close()


def req(port: int, body: bytes = b'{"q":1}', path: str = "/v1/chat/completions",
        headers: dict[str, str] | None = None, host: str = "127.0.0.1", scheme: str = "http") -> UpstreamRequest:
    return UpstreamRequest("POST", f"{scheme}://{host}:{port}{path}",
                           headers or {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}, body)


async def test_request_on_the_wire_and_keep_alive_reuse(serve, pool) -> None:
    s = await serve(answer(ok()))
    t = HttpTransport(pool)
    for i in range(3):
        r = await t.send(req(s.port, body=b'{"n":%d}' % i, path="/v1/chat/completions?x=1"), 5)
        assert (r.status, r.body) == (200, b'{"ok":true}')
        assert r.headers["Content-Type"] == "application/json"
    assert s.connections == 1  # one keep-alive connection served all three
    head, _, body = s.requests[2].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert b"Host: 127.0.0.1:%d" % s.port in lines
    assert b"Authorization: Bearer sk-test" in lines
    assert b"Content-Length: 7" in lines and body == b'{"n":2}'
    assert b"User-Agent: llm-gateway" in lines and b"Accept: */*" in lines


async def test_adapter_headers_replace_the_defaults(serve, pool) -> None:
    s = await serve(answer(ok()))
    await HttpTransport(pool).send(req(s.port, headers={"accept": "text/event-stream", "X-Key": "k"}), 5)
    lines = s.requests[0].partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert [ln for ln in lines if ln.lower().startswith(b"accept:")] == [b"accept: text/event-stream"]
    assert sum(ln.lower().startswith(b"host:") for ln in lines) == 1
    assert pool.open_connections == 1 and pool.idle_connections == 1


async def test_connection_close_answer_is_not_reused(serve, pool) -> None:
    s = await serve(answer(ok(extra=b"Connection: close\r\n"), keep=False))
    t = HttpTransport(pool)
    for _ in range(2):
        assert (await t.send(req(s.port), 5)).status == 200
    assert s.connections == 2
    assert pool.open_connections == 0


async def test_chunked_gzip_body_and_1xx_before_the_answer(serve, pool) -> None:
    raw = b'{"choices":[{"message":{"content":"hi"}}]}'
    z = gzip.compress(raw)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (z[:10], z[10:])) + b"0\r\n\r\n"
    s = await serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked))
    t = HttpTransport(pool)
    r = await t.send(req(s.port), 5)
    assert (r.status, r.body) == (200, raw)
    assert (await t.send(req(s.port), 5)).body == raw  # and the connection was clean for the next one
    assert s.connections == 1


async def test_server_closing_an_idle_connection_gets_a_fresh_one(serve, pool) -> None:
    s = await serve(answer(ok()))
    t = HttpTransport(pool)
    await t.send(req(s.port), 5)
    (origin,) = pool._origins.values()
    proto = origin.idle[0][0]
    closed = proto.closed
    s.writers[0].close()  # the vendor drops the idle keep-alive connection
    await closed
    assert (await t.send(req(s.port), 5)).status == 200
    assert s.connections == 2 and pool.open_connections == 1


def second_on_a_connection(then: bytes) -> Reply:
    """The first request on each connection is answered; the second gets ``then`` and
    the connection closes: a server closing an idle keep-alive connection just as a
    request is written to it (its idle timeout, a deploy)."""
    seen: dict[int, int] = {}

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        n = seen[id(w)] = seen.get(id(w), 0) + 1
        if n == 1:
            w.write(ok())
            await w.drain()
            return True
        if then:
            w.write(then)
            await w.drain()
        return False
    return reply


async def test_a_request_on_a_connection_closed_while_idle_is_sent_again_at_once(serve, pool) -> None:
    s = await serve(second_on_a_connection(b""))
    t = HttpTransport(pool)
    await t.send(req(s.port), 5)
    r = await t.send(req(s.port, body=b'{"n":2}'), 5)  # closed under it: sent again on a new connection
    assert r.status == 200 and s.connections == 2
    assert [q.endswith(b'{"n":2}') for q in s.requests] == [False, True, True]
    assert pool.open_connections == 1


async def test_only_a_reused_connection_ending_before_any_byte_is_resent(serve, pool) -> None:
    t = HttpTransport(pool)
    fresh = await serve(answer(b"", keep=False))  # a new connection closed without an answer
    with pytest.raises(errors.UpstreamUnavailable):
        await t.send(req(fresh.port), 5)
    assert len(fresh.requests) == 1  # the router's to retry, with its rules
    partial = await serve(second_on_a_connection(b"HTTP/1.1 200 OK\r\nContent-Le"))  # the answer had begun
    await t.send(req(partial.port), 5)
    with pytest.raises(errors.UpstreamUnavailable):
        await t.send(req(partial.port), 5)
    assert len(partial.requests) == 2
    both = await serve(second_on_a_connection(b""))
    await t.send(req(both.port), 5)
    both.reply = answer(b"", keep=False)  # and the new connection fails too: resent once, no more
    with pytest.raises(errors.UpstreamUnavailable):
        await t.send(req(both.port), 5)
    assert len(both.requests) == 3 and pool.open_connections == 0


async def test_idle_connections_expire_after_the_keepalive_time(serve) -> None:
    now = [100.0]
    pool = UpstreamPool(limit=10, connect_timeout=5, keepalive=15.0, clock=lambda: now[0])
    try:
        s = await serve(answer(ok()))
        t = HttpTransport(pool)
        await t.send(req(s.port), 5)
        now[0] += 14.0
        await t.send(req(s.port), 5)
        assert s.connections == 1
        now[0] += 15.0
        await t.send(req(s.port), 5)
        assert s.connections == 2 and pool.open_connections == 1
        now[0] += 15.0
        pool._sweep()  # the timer's job: nothing idle stays open past the keep-alive time
        assert pool.open_connections == 0 and pool.idle_connections == 0
    finally:
        await pool.close()


async def read_all(st) -> list[bytes]:
    chunks = []
    while data := await st.next_chunk():
        chunks.append(data)
    return chunks


def hangs_after(data: bytes, gate: asyncio.Event) -> Reply:
    """Writes ``data`` (a head and part of a body), then says nothing until ``gate`` opens."""
    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(data)
        await w.drain()
        await gate.wait()
        return False
    return reply


def held(gate: asyncio.Event) -> Reply:
    """Answers once ``gate`` is open (it stays open: later requests are answered at once)."""
    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        await gate.wait()
        w.write(ok())
        await w.drain()
        return True
    return reply


async def test_the_connection_cap_queues_requests_in_order(serve) -> None:
    release = asyncio.Event()
    pool = UpstreamPool(limit=1, connect_timeout=5)
    try:
        s = await serve(held(release))
        t = HttpTransport(pool)
        first = asyncio.create_task(t.send(req(s.port, body=b"1"), 5))
        while not s.requests:
            await asyncio.sleep(0)  # until the first request is on the wire
        rest = [asyncio.create_task(t.send(req(s.port, body=b"%d" % i), 5)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert pool.open_connections == 1 and len(pool._waiters) == 2
        release.set()
        results = await asyncio.gather(first, *rest)
        assert [r.status for r in results] == [200, 200, 200]
        assert [r.rpartition(b"\r\n\r\n")[2] for r in s.requests] == [b"1", b"2", b"3"]
        assert s.connections == 1
    finally:
        await pool.close()


async def test_a_cancelled_waiter_gives_its_turn_away(serve) -> None:
    gate = asyncio.Event()
    pool = UpstreamPool(limit=1, connect_timeout=5)
    try:
        s = await serve(held(gate))
        t = HttpTransport(pool)
        first = asyncio.create_task(t.send(req(s.port), 5))
        while not s.requests:
            await asyncio.sleep(0)
        waiter = asyncio.create_task(t.send(req(s.port), 5))
        third = asyncio.create_task(t.send(req(s.port), 5))
        await asyncio.sleep(0)
        waiter.cancel()
        gate.set()
        assert (await first).status == 200 and (await third).status == 200
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.open_connections == 1 and not pool._waiters
    finally:
        await pool.close()


async def test_a_timeout_closes_the_connection(serve, pool) -> None:
    hold = asyncio.Event()
    s = await serve(hangs_after(b"", hold))
    with pytest.raises(errors.UpstreamTimeout, match="no answer within 0.05 s"):
        await HttpTransport(pool).send(req(s.port), 0.05)
    assert pool.open_connections == 0
    hold.set()


async def test_connect_failures_and_garbage_answers_are_retryable_errors(serve, pool) -> None:
    t = HttpTransport(pool)
    probe = await serve(answer(b""))
    port = probe.port
    await probe.stop()  # nothing listens there any more
    with pytest.raises(errors.UpstreamUnavailable, match="could not connect"):
        await t.send(req(port), 5)
    s = await serve(answer(b"NOT HTTP AT ALL\r\n\r\n", keep=False))
    with pytest.raises(errors.UpstreamUnavailable, match="the connection failed"):
        await t.send(req(s.port), 5)
    s2 = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut", keep=False))
    with pytest.raises(errors.UpstreamUnavailable):
        await t.send(req(s2.port), 5)
    assert pool.open_connections == 0


async def test_streams_reuse_only_a_connection_read_to_its_end(serve, pool) -> None:
    events = b"".join(b"data: {\"n\":%d}\n\n" % i for i in range(3)) + b"data: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    rest = asyncio.Event()

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(head + b"%x\r\n%s\r\n" % (len(events), events))
        await w.drain()
        if len(s.requests) == 2:
            await rest.wait()  # the second stream's end is held back
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    s = await serve(reply)
    t = HttpTransport(pool)
    st = await t.open_stream(req(s.port), 5)
    assert st.status == 200 and st.headers["Content-Type"] == "text/event-stream"
    got = b"".join(await read_all(st))
    st.close()
    assert got == events and pool.idle_connections == 1
    st = await t.open_stream(req(s.port), 5)  # the same connection; left before its end
    await st.next_chunk()
    st.close()
    assert s.connections == 1 and pool.open_connections == 0  # a half-read stream is never reused
    rest.set()
    assert (await t.send(req(s.port), 5)).status == 200  # a fresh connection
    assert s.connections == 2


async def test_a_stream_cut_by_the_vendor_is_an_upstream_error(serve, pool) -> None:
    s = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"f\r\ndata: {\"n\":0}\n\n\r\n", keep=False))
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    with pytest.raises(errors.UpstreamUnavailable, match="stream broke"):
        await read_all(st)
    st.close()
    assert pool.open_connections == 0


async def test_header_injection_is_refused_before_any_connection(serve, pool) -> None:
    s = await serve(answer(ok()))
    with pytest.raises(errors.BadRequest):
        await HttpTransport(pool).send(req(s.port, headers={"X-Evil": "a\r\nHost: elsewhere"}), 5)
    assert s.connections == 0


async def test_https_with_sni_and_certificate_checks(serve, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    s = await serve(answer(ok()), tls=server_tls)
    trusted = ssl.create_default_context(cafile=str(cert))
    pool = UpstreamPool(limit=10, connect_timeout=5, tls=trusted)
    untrusted = UpstreamPool(limit=10, connect_timeout=5)  # the system's CAs do not know this cert
    try:
        for _ in range(2):
            r = await HttpTransport(pool).send(req(s.port, host="localhost", scheme="https"), 5)
            assert (r.status, r.body) == (200, b'{"ok":true}')
        assert b"Host: localhost:%d" % s.port in s.requests[0]
        with pytest.raises(errors.UpstreamUnavailable, match="could not connect"):
            await HttpTransport(untrusted).send(req(s.port, host="localhost", scheme="https"), 5)
        assert untrusted.open_connections == 0
    finally:
        await pool.close()
        await untrusted.close()


async def test_a_closed_pool_refuses_and_closes_its_idle_connections(serve, pool) -> None:
    s = await serve(answer(ok()))
    t = HttpTransport(pool)
    await t.send(req(s.port), 5)
    await pool.close()
    assert pool.open_connections == 0
    with pytest.raises(errors.UpstreamUnavailable, match="shutting down"):
        await t.send(req(s.port), 5)


async def test_flow_control_pauses_and_resumes_a_large_stream(serve, pool) -> None:
    piece = bytes(range(256)) * 64  # 16 KiB
    n = 64  # 1 MiB in all: far above the reader's high-water mark

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(n):
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await w.drain()
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    s = await serve(reply)
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    proto = st._ex.proto
    for _ in range(10_000):  # until the unread body makes the client stop reading
        if proto._reading_paused:
            break
        await asyncio.sleep(0)
    assert proto._reading_paused
    got = bytearray()
    while data := await st.next_chunk():
        got += data
    assert got == piece * n
    assert pool.idle_connections == 1  # read to its end: reusable
    assert (await HttpTransport(pool).send(req(s.port), 5)).status == 200


async def test_a_caller_cancellation_stays_a_cancellation(serve, pool) -> None:
    """The client went away: the deadline must not turn that into a retryable timeout."""
    hold = asyncio.Event()
    s = await serve(hangs_after(b"", hold))
    task = asyncio.create_task(HttpTransport(pool).send(req(s.port), 60))
    while not s.requests:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.open_connections == 0  # the half-done exchange was closed, not pooled
    hold.set()


async def test_a_body_delimited_by_the_connection_close(serve, pool) -> None:
    """No Content-Length, not chunked: the body runs to the end of the connection (RFC 9112 6.3)."""
    s = await serve(answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                           b'{"ok":"until eof"}', keep=False))
    r = await HttpTransport(pool).send(req(s.port), 5)
    assert (r.status, r.body) == (200, b'{"ok":"until eof"}')
    assert pool.open_connections == 0


async def test_a_complete_stream_waits_for_its_terminator_and_keeps_the_connection(serve) -> None:
    """[DONE] is in but the chunked body's end comes in a later packet: the connection
    waits for it (LINGER_S) and is reused, instead of costing a new TCP+TLS handshake."""
    end = asyncio.Event()
    events = b"data: {\"n\":0}\n\ndata: [DONE]\n\n"

    async def reply(request: bytes, w: asyncio.StreamWriter) -> bool:
        if request.endswith(b"stream"):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n" % (len(events), events))
            await w.drain()
            await end.wait()
            w.write(b"0\r\n\r\n")
        else:
            w.write(ok())
        await w.drain()
        return True

    pool = UpstreamPool(limit=10, connect_timeout=5)
    try:
        s = await serve(reply)
        t = HttpTransport(pool)
        st = await t.open_stream(req(s.port, body=b"stream"), 5)
        assert await st.next_chunk() == events
        st.close(complete=True)
        assert pool.open_connections == 1 and pool.idle_connections == 0  # waiting for the end
        proto = st._ex.proto
        end.set()
        for _ in range(10_000):
            if pool.idle_connections:
                break
            await asyncio.sleep(0)
        assert pool.idle_connections == 1 and proto.is_connected()
        assert (await t.send(req(s.port), 5)).status == 200
        assert s.connections == 1
    finally:
        await pool.close()


async def test_a_missing_terminator_closes_the_connection_after_the_linger(serve) -> None:
    never = asyncio.Event()
    events = b"data: [DONE]\n\n"
    reply = hangs_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(events), events),
                        never)

    pool = UpstreamPool(limit=10, connect_timeout=5, linger=0.01)
    try:
        s = await serve(reply)
        st = await HttpTransport(pool).open_stream(req(s.port), 5)
        assert await st.next_chunk() == events
        closed = st._ex.proto.closed
        st.close(complete=True)
        await asyncio.wait_for(closed, 5)  # the linger timer gave up on it
        assert pool.open_connections == 0
    finally:
        never.set()
        await pool.close()


async def test_an_abandoned_stream_is_closed_at_once(serve, pool) -> None:
    """The client left mid-answer: closing the connection is what stops the vendor generating."""
    never = asyncio.Event()
    s = await serve(hangs_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\ndata: {\"n\":0}\n\n\r\n", never))
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    await st.next_chunk()
    st.close()
    assert pool.open_connections == 0
    never.set()


async def test_one_dns_lookup_serves_every_new_connection(serve, pool, monkeypatch) -> None:
    s = await serve(answer(ok(extra=b"Connection: close\r\n"), keep=False))  # a new connection each time
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: list[str] = []

    async def counting(host: str, *a, **kw):
        lookups.append(host)
        return await real(host, *a, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    t = HttpTransport(pool)
    await asyncio.gather(*(t.send(req(s.port, host="localhost"), 5) for _ in range(5)))  # concurrent
    await t.send(req(s.port, host="localhost"), 5)
    assert s.connections == 6 and lookups == ["localhost"]


async def test_a_url_cannot_break_the_request_line(serve, pool) -> None:
    s = await serve(answer(ok()))
    await HttpTransport(pool).send(req(s.port, path="/v1/models/a b\r\nX: y/ü:generate?alt=sse"), 5)
    # (urlsplit drops CR, LF and tab from URLs itself; the rest is percent-encoded)
    assert s.requests[0].split(b"\r\n")[0] == b"POST /v1/models/a%20bX:%20y/%C3%BC:generate?alt=sse HTTP/1.1"


async def test_closing_the_pool_closes_a_lingering_stream(serve) -> None:
    never = asyncio.Event()
    events = b"data: [DONE]\n\n"
    reply = hangs_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(events), events),
                        never)

    pool = UpstreamPool(limit=10, connect_timeout=5, linger=60)
    s = await serve(reply)
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    await st.next_chunk()
    st.close(complete=True)
    assert pool.open_connections == 1
    await pool.close()  # shutdown does not wait a minute for the terminator
    assert pool.open_connections == 0 and not st._ex.proto.is_connected()
    never.set()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def pushed_until_woken(st, gate: asyncio.Event) -> list[bytes]:
    """Push mode on, ``gate`` opened (the server sends the rest), wait for the wake-up
    (end or failure of the body), back to pull mode: the pieces that were pushed."""
    got: list[bytes] = []
    woke = asyncio.Event()
    assert st.push(got.append, woke.set)
    gate.set()
    await asyncio.wait_for(woke.wait(), 5)
    st.unpush()
    return got


async def test_push_mode_hands_pieces_on_in_order_and_gives_way_to_reads(serve, pool) -> None:
    """``HttpStream.push``: pieces go to the callback as they are parsed; unpushed, they wait
    in the reader, and push mode is refused until they are read (order is never lost);
    the body's end wakes the pusher and the connection is reused."""
    gates = [asyncio.Event() for _ in range(3)]

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a"))
        for gate, data in zip(gates, (chunk(b"b") + chunk(b"c"), chunk(b"d"), chunk(b"e") + b"0\r\n\r\n")):
            await w.drain()
            await gate.wait()
            w.write(data)
        await w.drain()
        return True

    s = await serve(reply)
    t = HttpTransport(pool)
    st = await t.open_stream(req(s.port), 5)
    assert await st.next_chunk() == b"a"
    got: list[bytes] = []
    arrived, woke = asyncio.Event(), asyncio.Event()

    def on_data(data: bytes) -> None:
        got.append(data)
        arrived.set()

    assert st.push(on_data, woke.set)
    gates[0].set()
    while got != [b"b", b"c"]:
        await arrived.wait()
        arrived.clear()
    st.unpush()
    gates[1].set()
    payload = st._ex.payload
    while not payload._buffer:  # "d" arrives while not pushing: it waits in the reader
        await asyncio.sleep(0)
    assert not st.push(on_data, woke.set)  # refused: "d" must be read first
    assert await st.next_chunk() == b"d"
    assert st.push(on_data, woke.set)
    gates[2].set()
    await asyncio.wait_for(woke.wait(), 5)  # the end of the body
    assert got == [b"b", b"c", b"e"]
    st.unpush()
    assert await st.next_chunk() == b""
    assert pool.idle_connections == 1  # read to its end: kept for the next request
    assert (await t.send(req(s.port), 5)).status == 200
    assert s.connections == 1


async def test_push_mode_wakes_on_a_cut_and_the_read_reports_it(serve, pool) -> None:
    gate = asyncio.Event()

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a"))
        await w.drain()
        await gate.wait()
        w.write(chunk(b"b"))
        await w.drain()
        return False  # the connection is closed mid-body

    s = await serve(reply)
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    assert await st.next_chunk() == b"a"
    assert await pushed_until_woken(st, gate) == [b"b"]
    with pytest.raises(errors.UpstreamUnavailable, match="stream broke"):
        await st.next_chunk()
    st.close()
    assert pool.open_connections == 0


async def test_push_mode_hands_on_a_gzip_stream_decompressed(serve, pool) -> None:
    """A vendor (or a proxy before it) may compress an event stream: aiohttp's decoder
    sits between the parser and the reader, and pushed pieces are the plain bytes."""
    import zlib

    gate = asyncio.Event()
    z = zlib.compressobj(wbits=31)  # gzip
    first = z.compress(b"data: 1\n\n") + z.flush(zlib.Z_SYNC_FLUSH)
    rest = [z.compress(b"data: %d\n\n" % i) + z.flush(zlib.Z_SYNC_FLUSH) for i in (2, 3)]
    tail = z.flush()

    async def reply(_req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(first))
        await w.drain()
        await gate.wait()
        w.write(b"".join(chunk(r) for r in rest) + chunk(tail) + b"0\r\n\r\n")
        await w.drain()
        return True

    s = await serve(reply)
    st = await HttpTransport(pool).open_stream(req(s.port), 5)
    assert await st.next_chunk() == b"data: 1\n\n"
    assert b"".join(await pushed_until_woken(st, gate)) == b"data: 2\n\ndata: 3\n\n"
    assert await st.next_chunk() == b""
    assert pool.idle_connections == 1


async def test_deadlines_of_several_lengths_share_one_timer():
    """Upstream deadlines hang off one loop timer: each fires at its own time, in order
    across lengths; one settled in time never fires, and nothing is kept once all are
    settled."""
    deadlines = _Deadlines()
    loop = asyncio.get_running_loop()
    armed = []
    call_at = loop.call_at

    def counting_call_at(when, cb, *args):
        armed.append(when)
        return call_at(when, cb, *args)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    outcome: dict[str, tuple[str, float]] = {}
    start = loop.time()

    async def call(name: str, timeout: float, until: asyncio.Event) -> None:
        try:
            with deadlines(timeout):
                await until.wait()
            outcome[name] = ("done", loop.time() - start)
        except TimeoutError:
            outcome[name] = ("timeout", loop.time() - start)

    release, never = asyncio.Event(), asyncio.Event()
    try:
        long_ = asyncio.create_task(call("long", 30.0, release))
        short = asyncio.create_task(call("short", 0.05, never))
        middle = asyncio.create_task(call("middle", 0.1, never))
        await asyncio.sleep(0)
        assert deadlines.pending() == 3
        assert len(armed) == 2  # the first deadline, then the sooner "short" one; not "middle"
        await short
        assert outcome["short"][0] == "timeout" and 0.05 - 0.002 <= outcome["short"][1]
        await middle
        assert outcome["middle"][0] == "timeout" and outcome["middle"][1] >= 0.1 - 0.002
        release.set()
        await long_
        assert outcome["long"][0] == "done"
        assert deadlines.pending() == 0
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        deadlines.close()


async def test_a_deadline_leaves_an_outside_cancel_alone():
    deadlines = _Deadlines()

    async def call() -> None:
        with deadlines(30.0):
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.pending() == 0
    deadlines.close()
