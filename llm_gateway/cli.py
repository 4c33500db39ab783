"""The ``llm-gateway`` command (and ``python -m llm_gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from typing import Any

from aiohttp import web

from .logging import event, setup_logging
from .settings import ConfigError, Settings, load_settings

#: a worker that dies sooner than this after its start is not restarted (a crash loop)
RESTART_MIN_UPTIME = 5.0


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="llm-gateway", description="OpenAI-compatible LLM gateway.")
    p.add_argument("--host", help="bind address (env HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (env PORT, default 8080)")
    p.add_argument("--env-file", dest="env_file", help="a .env file (default ./.env if present)")
    p.add_argument("--config", help="TOML config (env GATEWAY_CONFIG)")
    p.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    return vars(p.parse_args(argv))


def _install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def check(settings: Settings) -> None:
    """Everything the configuration can be wrong about, checked before any socket is
    opened or worker started (raises ConfigError): the catalog, prices and tasks of the
    config file, and the cache backend's URL."""
    from .cache.backends import redis_params
    from .catalog import load_catalog

    load_catalog(settings.config)
    if "redis" in (settings.cache_backend, settings.rate_limit_backend):
        redis_params(settings.redis_url)


def listen(settings: Settings) -> socket.socket:
    """The listening socket, bound once: a port in use is an error here, before anything
    says it is listening, and workers share this one socket (no SO_REUSEPORT, so a
    second gateway started on the same port fails instead of taking half the traffic)."""
    infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    from .app import create_app

    handler = setup_logging(settings.log_level, settings.secrets())
    uv = _install_uvloop()
    app = create_app(settings)
    configured = [n for n, p in settings.providers.items() if p.configured and p.kind != "mock"]
    if configured:
        event(logging.INFO, f"providers configured: {', '.join(configured)}", event="startup",
              providers=configured, uvloop=uv)
    else:
        event(logging.WARNING, "no provider key is set: serving the built-in 'mock' provider only; its "
              "answers are simulated. Set OPENAI_API_KEY, CLAUDE_API_KEY, GEMINI_API_KEY or MISTRAL_API_KEY.",
              event="startup", providers=["mock"], uvloop=uv)
    base = f"http://{settings.host}:{settings.port}"

    def listening(_: str) -> None:  # aiohttp calls this once the site is started
        event(logging.INFO, f"listening on {base}: point OpenAI SDKs at base_url {base}/v1; the UI is {base}/",
              event="startup", host=settings.host, port=settings.port)

    async def on_shutdown(_: web.Application) -> None:
        event(logging.INFO, "shutting down: no new connections; requests in flight have "
              f"{settings.shutdown_timeout:g} s to finish (SHUTDOWN_TIMEOUT)", event="shutdown", state="draining")
        began = time.monotonic()

        def again() -> None:
            # A signal during the drain stops at once, saying what that costs. One within a
            # second of the first is the same stop (a terminal's Ctrl-C reaches every worker
            # and the parent forwards it too): ignored.
            if time.monotonic() - began < 1.0:
                return
            from .keys import LEDGER

            ledger = app.get(LEDGER)
            lost = ledger.status()["queued"] if ledger is not None else 0
            event(logging.WARNING, f"second signal: stopping at once; requests in flight are cut and {lost} "
                  "spend-ledger rows not yet written are lost", event="shutdown", state="forced", lost=lost)
            handler.flush()
            os._exit(1)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, again)

    app.on_shutdown.append(on_shutdown)
    # Everything loaded so far lives for the whole process: keep the cyclic GC from
    # walking it again and again under load.
    gc.collect()
    gc.freeze()
    if sock is None:
        sock = listen(settings)
    # handler_cancellation: a client that goes away cancels its handler, and with it
    # the upstream request (SPEC 7), instead of streaming into a closed socket.
    # shutdown_timeout: aiohttp's own wait for handlers; the app cuts open streams (with an
    # SSE error event) at SHUTDOWN_TIMEOUT, a little before it
    web.run_app(app, sock=sock, print=listening, access_log=None, handler_cancellation=True,
                shutdown_timeout=settings.shutdown_timeout + 2.0)
    event(logging.INFO, "stopped", event="shutdown", state="stopped")


def _die_with_parent() -> None:
    """A worker whose parent is killed (SIGKILL) gets SIGTERM instead of serving on as an orphan."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (AttributeError, OSError):
        pass


def _worker(cli: dict[str, Any], sock: socket.socket) -> None:
    _die_with_parent()
    serve(load_settings(cli), sock)


def _supervise(cli: dict[str, Any], settings: Settings, sock: socket.socket) -> int:
    """Run ``settings.workers`` processes on one socket; restart one that dies (unless it
    dies right after starting: a crash loop stops the gateway); SIGTERM/SIGINT stop all.
    The exit status is non-zero when a worker failed."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[Any, tuple[Any, float]] = {}
    stopping = False

    def start() -> None:
        p = ctx.Process(target=_worker, args=(cli, sock), daemon=False)
        p.start()
        procs[p.sentinel] = (p, time.monotonic())

    def stop(signum: int, frame: Any) -> None:  # SIGTERM/SIGINT to the parent reach every worker
        nonlocal stopping
        stopping = True
        for p, _ in procs.values():
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(settings.workers):
        start()
    status = 0
    while procs:
        for sentinel in multiprocessing.connection.wait(list(procs)):
            p, started = procs.pop(sentinel)
            p.join()
            if stopping:
                status = status or (0 if p.exitcode in (0, -signal.SIGTERM) else 1)
                continue
            print(f"llm-gateway: worker {p.pid} exited with status {p.exitcode}", file=sys.stderr)
            if time.monotonic() - started < RESTART_MIN_UPTIME:
                print("llm-gateway: it died right after starting; stopping the gateway", file=sys.stderr)
                status = 1
                stop(signal.SIGTERM, None)
            else:
                start()
    return status


def main(argv: list[str] | None = None) -> int:
    cli = parse_args(argv)
    try:
        settings = load_settings(cli)
        check(settings)
    except ConfigError as e:
        print(f"llm-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        sock = listen(settings)
    except OSError as e:
        print(f"llm-gateway: cannot listen on {settings.host}:{settings.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    if settings.workers <= 1:
        serve(settings, sock)
        return 0
    return _supervise(cli, settings, sock)


if __name__ == "__main__":
    raise SystemExit(main())
