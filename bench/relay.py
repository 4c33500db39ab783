"""The floor for workload (c): a raw TCP relay between the benchmark's client and upstream.

Each client connection gets its own upstream connection and bytes are copied both ways
as they arrive: no HTTP parsing, no JSON, no framing — the least any proxy on this event
loop (uvloop when installed) can spend per streamed chunk: a wake-up, a ``recv`` and a
``send``. ``bench/run.py`` measures workload (c) through it beside the gateway, so the
gateway's CPU per chunk and added time to first token can be read against what the
machine itself costs. Run alone::

    python bench/relay.py --upstream-port 9999        # prints LISTENING <port>
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any


class _Upstream(asyncio.Protocol):
    def __init__(self, down: asyncio.Transport) -> None:
        self.down = down

    def data_received(self, data: bytes) -> None:
        self.down.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.up: asyncio.Transport | None = None
        self.early: list[bytes] = []  # what the client sent before the upstream connected
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up, _ = await loop.create_connection(lambda: _Upstream(self.t), self.host, self.port)
        except OSError:
            self.t.close()
            return
        if self.closed:
            up.close()
            return
        self.up = up  # type: ignore[assignment]
        for data in self.early:
            up.write(data)
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.up is not None:
            self.up.close()


async def serve(host: str, port: int, upstream_host: str, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_host, upstream_port), host, port, backlog=1024)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Raw TCP relay: the per-chunk floor for the llm-gateway benchmark.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True)
    a = p.parse_args(argv)
    run_loop(serve(a.host, a.port, a.upstream_host, a.upstream_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
