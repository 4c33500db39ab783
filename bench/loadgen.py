"""Load generators: ``wrk`` (non-streaming), a raw asyncio HTTP/1.1 client (the
fallback when wrk is absent) and an aiohttp client for SSE streams.

Every generator returns plain dicts: ``requests``, ``errors``, ``duration_s``, ``rps``
and latencies in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

WRK_HINT = "install it with: sudo apt-get install -y wrk   (Debian/Ubuntu package 'wrk')"


def run_loop(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------------------- wrk
def find_wrk(install: bool) -> str | None:
    """wrk's path; with ``install`` and root, try ``apt-get install -y wrk`` once."""
    path = shutil.which("wrk")
    if path or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return path
    print("wrk not found; running apt-get install -y wrk (as root) ...", flush=True)
    for cmd in (["apt-get", "install", "-y", "-qq", "wrk"], ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


_LUA = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.1f %%.1f %%.1f %%.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""


class Wrk:
    def __init__(self, path: str, popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
                 done: Callable[[subprocess.Popen[bytes]], None] | None = None, workdir: str | None = None) -> None:
        self.path = path
        self.popen = popen  # the benchmark passes its own, which cleans up on any exit
        self.done = done
        self.dir = workdir or tempfile.mkdtemp(prefix="llmgw-bench-wrk-")

    def version(self) -> str:
        out = subprocess.run([self.path, "-v"], capture_output=True, text=True, check=False)
        return (out.stdout + out.stderr).split("Copyright")[0].strip()

    def run(self, url: str, body: bytes, headers: dict[str, str], conns: int, seconds: int,
            threads: int = 1) -> dict[str, Any]:
        hdr = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = os.path.join(self.dir, "post.lua")
        with open(script, "w") as f:
            f.write(_LUA % {"body": body.decode(), "headers": hdr})
        cmd = [self.path, f"-t{max(1, min(threads, conns))}", f"-c{conns}", f"-d{max(1, int(seconds))}s",
               "--timeout", "10s", "-s", script, url]
        p = self.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=seconds + 30)
        finally:
            if self.done:
                self.done(p)
        line = next((ln for ln in out.decode().splitlines() if ln.startswith("BENCH_RESULT")), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({p.returncode}): {err.decode().strip() or out.decode().strip()}")
        v = [float(x) for x in line.split()[1:]]
        requests, dur_us = int(v[0]), v[1]
        errors = int(sum(v[2:7]))
        return {
            "requests": requests, "errors": errors, "non_2xx": int(v[5]), "duration_s": dur_us / 1e6,
            "rps": requests / (dur_us / 1e6) if dur_us else 0.0,
            "p50_ms": v[7] / 1000, "p99_ms": v[8] / 1000, "max_ms": v[9] / 1000, "mean_ms": v[10] / 1000,
            "client": "wrk",
        }


# ---------------------------------------------------------------------------- raw asyncio client
def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def framing(header_lines: list[bytes]) -> tuple[int, bool, bool]:
    """(Content-Length, chunked, Connection: close) from HTTP/1.1 header lines; the fake
    upstream parses requests with it too."""
    length, chunked, close = 0, False, False
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return length, chunked, close


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = framing(head.split(b"\r\n")[1:])
    if not chunked:
        return status, close, await reader.readexactly(length)
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, close, bytes(body)
        body += await reader.readexactly(size + 2)
        del body[-2:]


async def raw_load(url: str, body: bytes, headers: dict[str, str], conns: int, seconds: float,
                   max_requests: int | None = None) -> dict[str, Any]:
    """Closed-loop load with ``conns`` keep-alive connections for ``seconds`` (or ``max_requests``)."""
    host, port, req = _request_bytes(url, body, headers)
    lat: list[float] = []
    errors = 0
    budget = [max_requests if max_requests is not None else -1]
    start = time.perf_counter()
    deadline = start + seconds

    async def one() -> None:
        nonlocal errors
        reader = writer = None
        try:
            while time.perf_counter() < deadline and budget[0] != 0:
                budget[0] -= 1
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                t0 = time.perf_counter()
                writer.write(req)
                try:
                    status, close, _ = await _read_response(reader)  # type: ignore[arg-type]
                except (asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    writer = None
                    continue
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
                if close:
                    writer.close()
                    writer = None
        except OSError:
            errors += 1
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    duration = time.perf_counter() - start
    lat.sort()
    ms = [x * 1000 for x in lat]
    return {
        "requests": len(lat), "errors": errors, "non_2xx": errors, "duration_s": duration,
        "rps": len(lat) / duration if duration else 0.0,
        "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": ms[-1] if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"), "client": "asyncio",
    }


async def one_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One POST; (status, lower-cased headers, body)."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


# ---------------------------------------------------------------------------- SSE streams (aiohttp)
async def stream_load(url: str, body: bytes, headers: dict[str, str], streams: int, rounds: int,
                      stagger_s: float = 0.0) -> dict[str, Any]:
    """``streams`` concurrent clients, each opening ``rounds`` streams back to back.

    With ``stagger_s`` client i starts i*stagger_s/streams late, so that each stream
    opens while the others are mid-flight (steady concurrency rather than a burst of
    simultaneous starts). Time to first token = request sent → first event with a
    non-empty ``delta.content``."""
    import aiohttp

    ttft: list[float] = []
    totals: list[float] = []
    chunks = errors = incomplete = 0
    usage_seen = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            nonlocal chunks, errors, incomplete, usage_seen
            if stagger_s:
                await asyncio.sleep(i * stagger_s / streams)
            for _ in range(rounds):
                t0 = time.perf_counter()
                first = None
                got = 0
                done = False
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        if r.status != 200:
                            errors += 1
                            await r.read()
                            continue
                        async for line in r.content:
                            if not line.startswith(b"data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == b"[DONE]":
                                done = True
                                break
                            obj = orjson.loads(payload)
                            ch = obj.get("choices")
                            if ch and (ch[0].get("delta") or {}).get("content"):
                                got += 1
                                if first is None:
                                    first = time.perf_counter() - t0
                            if obj.get("usage"):
                                usage_seen += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                    errors += 1
                    continue
                chunks += got
                if not done:
                    incomplete += 1
                if first is not None:
                    ttft.append(first)
                totals.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(streams)))
        duration = time.perf_counter() - start
    ttft_ms = sorted(x * 1000 for x in ttft)
    tot_ms = sorted(x * 1000 for x in totals)
    return {
        "streams": len(totals), "errors": errors, "incomplete": incomplete, "chunks": chunks,
        "usage_chunks": usage_seen, "duration_s": duration,
        "chunks_per_s": chunks / duration if duration else 0.0,
        "ttft_p50_ms": pct(ttft_ms, 50), "ttft_p99_ms": pct(ttft_ms, 99),
        "stream_p50_ms": pct(tot_ms, 50), "client": "aiohttp",
    }
