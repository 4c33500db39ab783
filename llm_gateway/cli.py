"""The ``llm-gateway`` command (and ``python -m llm_gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import signal
import socket
import sys
from typing import Any

from aiohttp import web

from .logging import event, setup_logging
from .settings import ConfigError, Settings, load_settings


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


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    from .app import create_app

    setup_logging(settings.log_level, settings.secrets())
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
    event(logging.INFO, f"listening on http://{settings.host}:{settings.port}", event="startup",
          host=settings.host, port=settings.port)
    # Everything loaded so far lives for the whole process: keep the cyclic GC from
    # walking it again and again under load.
    gc.collect()
    gc.freeze()
    if sock is not None:
        web.run_app(app, sock=sock, print=None, access_log=None, handler_cancellation=True)
    else:
        # handler_cancellation: a client that goes away cancels its handler, and with it
        # the upstream request (SPEC 7), instead of streaming into a closed socket.
        web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                    reuse_port=settings.workers > 1, handler_cancellation=True)


def _worker(cli: dict[str, Any]) -> None:
    serve(load_settings(cli))


def main(argv: list[str] | None = None) -> int:
    cli = parse_args(argv)
    try:
        settings = load_settings(cli)
    except ConfigError as e:
        print(f"llm-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    if settings.workers <= 1:
        serve(settings)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(cli,), daemon=False) for _ in range(settings.workers)]
    for p in procs:
        p.start()

    def stop(signum: int, frame: Any) -> None:  # SIGTERM/SIGINT to the parent reach every worker
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
