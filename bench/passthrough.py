"""A reference for workloads (a) and (c): the plainest aiohttp pass-through.

One ``aiohttp.web`` route that forwards ``POST /v1/chat/completions`` to the upstream
through one shared ``ClientSession`` and sends the answer back as it comes: the body
as received for JSON, each piece as read (``iter_any``) for a stream. No auth, no
parsing, no logs, no metrics, no ledger; uvloop when installed (``--no-uvloop``: the
default asyncio loop). ``bench/run.py`` measures it beside the gateway, so the gateway's
figures can be read against what aiohttp's server and client alone cost on this
machine — the framework the gateway is built on, with none of its features. Run alone::

    python bench/passthrough.py --upstream http://127.0.0.1:9999     # prints LISTENING <port>
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

_FORWARDED = ("Content-Type", "Authorization")
_SESSION = web.AppKey("session", ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
    async with request.app[_SESSION].post(request.app[_UPSTREAM] + "/v1/chat/completions", data=body,
                                          headers=headers) as r:
        ctype = r.headers.get("Content-Type", "application/json")
        if not ctype.startswith("text/event-stream"):
            return web.Response(body=await r.read(), status=r.status, headers={"Content-Type": ctype})
        resp = web.StreamResponse(status=r.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        async for piece in r.content.iter_any():
            await resp.write(piece)
        await resp.write_eof()
        return resp


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[_UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/v1/chat/completions", chat)

    async def session(app: web.Application) -> Any:
        app[_SESSION] = ClientSession(connector=TCPConnector(limit=0))
        yield
        await app[_SESSION].close()

    app.cleanup_ctx.append(session)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A bare aiohttp pass-through: the framework reference for the "
                                            "llm-gateway benchmark.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--upstream", required=True, help="the upstream's base URL, without /v1")
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default event loop")
    a = p.parse_args(argv)
    if not a.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    port = sock.getsockname()[1]
    web.run_app(make_app(a.upstream), sock=sock, access_log=None, backlog=1024,
                print=lambda *_: print(f"LISTENING {port}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
