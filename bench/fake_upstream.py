"""A fast fake OpenAI upstream for the benchmark: a raw asyncio protocol, canned bytes.

It must never be the bottleneck, so it is not an aiohttp app: a minimal HTTP/1.1
server (keep-alive, Content-Length or chunked request bodies) on uvloop when
installed, answering

- ``POST …/chat/completions`` — OpenAI chat-completions JSON, or SSE
  ``chat.completion.chunk`` events when ``"stream": true`` (a role chunk, N content
  chunks at a fixed interval, a finish chunk, the usage chunk with ``choices: []``
  when ``stream_options.include_usage`` is set, then ``data: [DONE]``);
- ``GET …/models`` — one model;
- ``GET /healthz``;
- ``POST /_bench/config`` — ``{"latency_ms", "jitter_ms", "chunks", "interval_ms"}``: changes the
  behaviour of later requests (the benchmark sets it between workloads, so a peer
  gateway pointed at this one URL sees the same upstream);
- ``GET /_bench/stats`` — ``{"requests": n, "streams": n}``.

Any API key is accepted. Run alone::

    python bench/fake_upstream.py --port 9999 --latency-ms 0 --chunks 100 --interval-ms 5

It prints ``LISTENING <port>`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from typing import Any

import orjson
from loadgen import framing  # bench/ is on sys.path: this file runs as a script

CONFIG: dict[str, float] = {"latency_ms": 0.0, "jitter_ms": 0.0, "chunks": 100, "interval_ms": 5.0}
STATS = {"requests": 0, "streams": 0}

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}
_USAGE_PROMPT = 14


def _response(status: int, body: bytes, ctype: bytes = b"application/json", close: bool = False) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        status, _REASONS.get(status, b"OK"), ctype, len(body))
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def _error(status: int, message: str) -> bytes:
    return _response(status, orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                                     "param": None, "code": None}}))


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def _sse_chunk(obj: Any) -> bytes:
    ev = b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(ev), ev)


def completion(model: str, n_tokens: int = 9) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench0001", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! This is the fake upstream.",
                                             "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": _USAGE_PROMPT, "completion_tokens": n_tokens,
                  "total_tokens": _USAGE_PROMPT + n_tokens},
        "system_fingerprint": "fp_bench",
    })


def stream_events(model: str, chunks: int, include_usage: bool) -> tuple[bytes, bytes, bytes]:
    """(first write: role + first content chunk, each later content chunk, the tail)."""
    base = {"id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "system_fingerprint": "fp_bench"}
    if include_usage:
        base["usage"] = None

    def ev(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse_chunk({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]})

    role = ev({"role": "assistant", "content": "", "refusal": None})
    content = ev({"content": " tok"})
    tail = ev({}, "stop")
    if include_usage:
        tail += _sse_chunk({**base, "choices": [], "usage": {
            "prompt_tokens": _USAGE_PROMPT, "completion_tokens": chunks, "total_tokens": _USAGE_PROMPT + chunks}})
    tail += _sse_chunk(b"[DONE]") + b"0\r\n\r\n"
    return role + (content if chunks > 0 else b""), content, tail


class HttpConn(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order, one at a time."""

    def __init__(self) -> None:
        self.t: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    # ------------------------------------------------------------------ parsing
    def process(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, target, _ = lines[0].split(b" ", 2)
            except ValueError:
                self.t.write(_error(400, "bad request line"))  # type: ignore[union-attr]
                self.t.close()  # type: ignore[union-attr]
                return
            length, chunked, close = framing(lines[1:])
            start = end + 4
            if chunked:
                got = self._dechunk(start)
                if got is None:
                    return
                body, consumed = got
            else:
                if len(self.buf) < start + length:
                    return
                body, consumed = bytes(self.buf[start:start + length]), start + length
            del self.buf[:consumed]
            self.handle(method, target.split(b"?", 1)[0], body, close)

    def _dechunk(self, pos: int) -> tuple[bytes, int] | None:
        out = bytearray()
        while True:
            nl = self.buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(bytes(self.buf[pos:nl]).split(b";")[0], 16)
            pos = nl + 2
            if size == 0:
                end = self.buf.find(b"\r\n", pos)  # no trailers expected
                return (bytes(out), end + 2) if end >= 0 else None
            if len(self.buf) < pos + size + 2:
                return None
            out += self.buf[pos:pos + size]
            pos += size + 2

    # ------------------------------------------------------------------ answers
    def handle(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        t = self.t
        assert t is not None
        if path.endswith(b"/chat/completions") and method == b"POST":
            try:
                req = orjson.loads(body)
                model = str(req.get("model") or "gpt-4o-mini")
            except (orjson.JSONDecodeError, AttributeError):
                t.write(_error(400, "We could not parse the JSON body of your request."))
                return
            STATS["requests"] += 1
            latency = CONFIG["latency_ms"] / 1000.0
            if CONFIG["jitter_ms"]:
                latency = max(0.0, latency + random.uniform(-1, 1) * CONFIG["jitter_ms"] / 1000.0)
            if req.get("stream"):
                STATS["streams"] += 1
                include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
                self.busy = True
                asyncio.get_running_loop().create_task(self.stream(model, include_usage, latency, close))
                return
            out = _response(200, completion(model), close=close)
            if latency > 0:
                self.busy = True
                asyncio.get_running_loop().call_later(latency, self.finish, out, close)
                return
            t.write(out)
        elif path.endswith(b"/models") and method == b"GET":
            t.write(_response(200, orjson.dumps({"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]})))
        elif path == b"/healthz":
            t.write(_response(200, b'{"status":"ok"}'))
        elif path == b"/_bench/config" and method == b"POST":
            try:
                CONFIG.update({k: float(v) for k, v in orjson.loads(body).items() if k in CONFIG})
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                t.write(_error(400, "bad config"))
                return
            t.write(_response(200, orjson.dumps(CONFIG)))
        elif path == b"/_bench/stats":
            t.write(_response(200, orjson.dumps(STATS)))
        else:
            t.write(_error(404, f"no route {method.decode()} {path.decode(errors='replace')}"))
        if close:
            t.close()

    def finish(self, out: bytes, close: bool) -> None:
        if self.closed:
            return
        self.t.write(out)  # type: ignore[union-attr]
        if close:
            self.t.close()  # type: ignore[union-attr]
            return
        self.busy = False
        if self.buf:
            self.process()

    async def stream(self, model: str, include_usage: bool, latency: float, close: bool) -> None:
        t = self.t
        assert t is not None
        chunks = int(CONFIG["chunks"])
        interval = CONFIG["interval_ms"] / 1000.0
        first, content, tail = stream_events(model, chunks, include_usage)
        if latency > 0:
            await asyncio.sleep(latency)
        if self.closed:
            return
        t.write(_STREAM_HEAD + first)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for _ in range(chunks - 1):
            if interval > 0:
                next_at += interval
                delay = next_at - loop.time()
                await asyncio.sleep(delay if delay > 0 else 0)
            if self.closed:
                return
            t.write(content)
        if interval > 0:
            await asyncio.sleep(interval)
        if self.closed:
            return
        t.write(tail)
        if close:
            t.close()
            return
        self.busy = False
        if self.buf:
            self.process()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpConn, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING {bound}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fast fake OpenAI upstream for the llm-gateway benchmark.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer (stream: before the head)")
    p.add_argument("--chunks", type=int, default=100, help="content chunks per stream")
    p.add_argument("--interval-ms", type=float, default=5.0, help="time between stream chunks")
    a = p.parse_args(argv)
    CONFIG.update(latency_ms=a.latency_ms, chunks=a.chunks, interval_ms=a.interval_ms)
    run_loop(serve(a.host, a.port))
    return 0


def run_loop(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
