"""A client that reads slowly: the gateway's direct SSE write path (sse.SSEResponse)
must wait for it (flow control) and deliver every byte, correctly framed."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from llm_gateway.keys import REQUEST_END, UPSTREAM_POOL
from llm_gateway.sse import SSEResponse
from tests.fakes.base import Fault


#: ~8 MB of answer in 2000 events
BIG_ANSWER = " ".join(f"w{i:05d}" + "x" * 3994 for i in range(2000))


def dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        nl = raw.index(b"\r\n", pos)
        size = int(raw[pos:nl], 16)
        if size == 0:
            return bytes(out)
        out += raw[nl + 2:nl + 2 + size]
        assert raw[nl + 2 + size:nl + 4 + size] == b"\r\n"
        pos = nl + 4 + size


async def stream_request(gw, limit: int = 2**16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client with a tiny receive window (back-pressure soon) that has sent a
    streaming chat request; ``limit``: how much its reader buffers before it stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (gw.server.host, gw.server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    body = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    return reader, writer


async def test_a_slow_reader_gets_the_whole_stream(gateway, vendor_env, fake_openai, monkeypatch) -> None:
    waited = asyncio.Event()
    real_wait = SSEResponse._client_reads

    async def client_reads(self: SSEResponse, aw) -> None:
        if self._direct is not None and self._direct._protocol._paused:
            waited.set()  # mid-stream, the client's socket was full: the gateway waits here
        await real_wait(self, aw)

    monkeypatch.setattr(SSEResponse, "_client_reads", client_reads)
    text = BIG_ANSWER
    fake_openai.inject(Fault(text=text))
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})

    reader, writer = await stream_request(gw)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    await asyncio.wait_for(waited.wait(), 30)  # not reading: the gateway must hold, not buffer it all
    raw = bytearray()
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        data = await asyncio.wait_for(reader.read(2**16), 30)
        if not data:
            pytest.fail("the gateway closed the stream early")
        raw += data
    writer.close()
    events = [e for e in dechunk(bytes(raw)).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    got = "".join((orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "")
                  for e in events[:-1] if orjson.loads(e[6:])["choices"])
    assert got == text


async def test_a_client_that_stops_reading_is_let_go(gateway, vendor_env, fake_openai, monkeypatch, caplog) -> None:
    """A client that reads nothing while the gateway has more to send is gone after
    CLIENT_SEND_TIMEOUT: its connection is closed and the upstream request cancelled,
    instead of both being held for as long as the client lingers."""
    from llm_gateway import sse

    monkeypatch.setattr(sse, "CLIENT_SEND_TIMEOUT", 0.3)
    fake_openai.inject(Fault(text=BIG_ANSWER))
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})
    reader, writer = await stream_request(gw)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(ended(gw).wait(), 30)
    writer.close()
    async with gw.http.get(gw.url + "/v1/gateway/requests") as r:
        rows = (await r.json())["data"]
    assert [(d["status"], d["error_type"]) for d in rows] == [(499, "client_disconnected")]
    assert any("client disconnected" in e["message"] for e in gw.events("error"))
    assert gw.app[UPSTREAM_POOL].open_connections == 0  # the upstream request went with it
    assert "Error handling request" not in gw.log_text() + caplog.text  # an expected end, not a traceback


def ended(gw) -> asyncio.Event:
    """Set when a request to ``gw`` has ended (its ledger row and log lines are written)."""
    done = asyncio.Event()
    gw.app[REQUEST_END].append(lambda request, ctx, status: done.set())
    return done


async def test_a_slow_but_steady_reader_is_not_cut(gateway, vendor_env, fake_openai, monkeypatch) -> None:
    """Flow control resumes only once much of the socket's send queue (megabytes) has
    gone, so one wait can outlast CLIENT_SEND_TIMEOUT while the client reads all along:
    what is timed is the gap between two signs of reading, not the whole wait."""
    import time

    from llm_gateway import sse

    monkeypatch.setattr(sse, "CLIENT_SEND_TIMEOUT", 0.4)
    monkeypatch.setattr(sse, "SEND_POLL", 0.05)
    longest = [0.0]
    since: list[float] = []  # the start of the wait in progress, if any
    real_wait = SSEResponse._client_reads

    async def client_reads(self: SSEResponse, aw) -> None:
        since.append(time.monotonic())
        try:
            await real_wait(self, aw)
        finally:
            longest[0] = max(longest[0], time.monotonic() - since.pop())

    monkeypatch.setattr(SSEResponse, "_client_reads", client_reads)
    fake_openai.inject(Fault(text=BIG_ANSWER))
    gw = await gateway({**vendor_env, "LOG_LEVEL": "info"})
    reader, writer = await stream_request(gw, limit=2048)  # its reads reach the socket
    await reader.readuntil(b"\r\n\r\n")
    done = ended(gw)
    got = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:  # ~40 KB/s: far slower than the gateway writes
        data = await reader.read(2048)
        assert data, "the gateway cut a client that was reading"
        got += len(data)
        await asyncio.sleep(0.05)
    # one wait outlasted CLIENT_SEND_TIMEOUT while the client was reading
    assert max([longest[0], *(time.monotonic() - t for t in since)]) > 0.4
    assert not done.is_set() and got > 20_000
    await asyncio.wait_for(done.wait(), 10)  # then it stops reading: let go
    writer.close()
    assert gw.app[UPSTREAM_POOL].open_connections == 0
