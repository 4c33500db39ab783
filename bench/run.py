#!/usr/bin/env python3
"""llm-gateway benchmark: one command, loopback only, bounded in time.

    .venv/bin/python bench/run.py                 # full run (a few minutes on 2 cores)
    .venv/bin/python bench/run.py --quick         # under a minute
    .venv/bin/python bench/run.py --smoke --no-wrk   # ~ seconds; what the smoke test runs
    .venv/bin/python bench/run.py --peer-url http://127.0.0.1:4000/v1 --peer-model gpt-4o-mini \
        --upstream-port 9999 --json out.json

It starts a fast fake OpenAI upstream (bench/fake_upstream.py) and the gateway as a
subprocess (one process; JSON logs at info, auth with a gateway key, metrics and cost
on; the response cache off), then measures, for the upstream called directly and for
the gateway (and an optional peer gateway, pointed by you at the same fake upstream):

  (a) latency at concurrency 1, upstream latency 0 (wrk)
  (b) throughput at 64 connections with a 50 ms upstream, gateway/direct ratio (wrk)
  (c) 16 concurrent SSE streams of 100 chunks at 5 ms (aiohttp client): time to first
      token, CPU per streamed chunk
  (d) a soak of N requests (default 100,000): RSS at 10 % and 100 %, flat within 5 %
  (e) the cache-hit path: a second gateway with CACHE_ENABLED=true, identical bodies

CPU is the gateway's whole process tree (utime+stime from /proc/<pid>/stat) sampled
before and after each workload; memory is VmRSS / VmHWM from /proc/<pid>/status.
Targets from issue 7 are printed beside each figure with PASS/MISS.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import procfs  # noqa: E402

GATEWAY_KEY = "sk-bench-gateway-key"
UPSTREAM_KEY = "sk-bench-upstream-key"
MODEL = "gpt-4o-mini"
#: the column of bench/passthrough.py, a bare aiohttp pass-through (the framework with no features)
REFERENCE = "bare aiohttp"

#: workload sizes per mode (seconds unless named otherwise)
PROFILES: dict[str, dict[str, Any]] = {
    "full": dict(warmup_s=1, lat_s=6, tput_s=10, stream_rounds=8, burst_rounds=3, soak_n=100_000, soak_cap_s=300,
                 cache_s=4, max_s=600),
    "quick": dict(warmup_s=1, lat_s=2, tput_s=3, stream_rounds=2, burst_rounds=1, soak_n=8_000, soak_cap_s=12,
                  cache_s=1, max_s=120),
    "smoke": dict(warmup_s=0.1, lat_s=0.3, tput_s=0.4, stream_rounds=1, burst_rounds=1, soak_n=300, soak_cap_s=4,
                  cache_s=0.3, max_s=60, chunks=20, interval_ms=1.0),
}

#: issue 7's targets: (workload, metric, op, limit, label)
TARGETS = [
    ("latency_c1", "cpu_ms_per_req", "<=", 0.3, "CPU-ms per request"),
    ("throughput_c64", "cpu_ms_per_req", "<=", 0.3, "CPU-ms per request"),
    ("soak", "cpu_ms_per_req", "<=", 0.3, "CPU-ms per request"),
    ("latency_c1", "added_p50_ms", "<=", 0.3, "added p50 latency (ms)"),
    ("throughput_c64", "ratio", ">=", 0.97, "throughput / direct"),
    ("streams", "cpu_us_per_chunk", "<=", 25.0, "CPU-µs per streamed chunk"),
    ("streams", "added_ttft_p50_ms", "<=", 0.5, "added time to first token (ms)"),
    ("memory", "peak_mb", "<=", 80.0, "peak resident memory (MB)"),
    ("soak", "rss_growth_pct", "<=", 5.0, "RSS growth 10%→100% of soak (%)"),
]


# ---------------------------------------------------------------------------- subprocesses
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup() -> None:
    # Die with the benchmark even if it is SIGKILLed (PR_SET_PDEATHSIG = 1).
    _libc.prctl(1, signal.SIGTERM)


class Children:
    """Every subprocess we start, in its own session; all stopped on any exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
               what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:g} s")


def start_listening(children: Children, script: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A bench/ helper server as a child process, once it prints ``LISTENING <port>``."""
    proc = children.popen([sys.executable, str(BENCH / script), *args], stdout=subprocess.PIPE)
    line = proc.stdout.readline().decode() if proc.stdout else ""
    if not line.startswith("LISTENING"):
        raise RuntimeError(f"{script} failed to start: {line!r}")
    return proc, int(line.split()[1])


class Upstream:
    def __init__(self, children: Children, port: int) -> None:
        self.proc, self.port = start_listening(children, "fake_upstream.py", "--port", str(port))
        self.base = f"http://127.0.0.1:{self.port}"

    def configure(self, **cfg: float) -> None:
        status, _, body = http("POST", self.base + "/_bench/config", json.dumps(cfg).encode())
        if status != 200:
            raise RuntimeError(f"upstream config refused: {body!r}")

    def requests_served(self) -> int:
        return int(json.loads(http("GET", self.base + "/_bench/stats")[2])["requests"])


class Passthrough:
    """bench/passthrough.py: a bare aiohttp pass-through, measured in (a) and (c) beside the gateway."""

    def __init__(self, children: Children, upstream: str) -> None:
        self.proc, port = start_listening(children, "passthrough.py", "--upstream", upstream)
        self.base = f"http://127.0.0.1:{port}"


class Relay:
    """bench/relay.py between the stream client and the upstream: the floor for workload (c)."""

    def __init__(self, children: Children, upstream_port: int) -> None:
        self.proc, port = start_listening(children, "relay.py", "--upstream-port", str(upstream_port))
        self.base = f"http://127.0.0.1:{port}"


def gateway_env(upstream_port: int, cache: bool, extra: list[str], config: str | None) -> dict[str, str]:
    spec_vars = {"OPENAI_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "CLAUDE_API_KEY", "ANTHROPIC_API_KEY",
                 "OPENAI_BASE_URL", "CLAUDE_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL",
                 "MISTRAL_BASE_URL", "HOST", "PORT", "LOG_LEVEL", "LOG_QUERIES", "CACHE_ENABLED", "CACHE_TTL",
                 "CACHE_BACKEND", "REDIS_URL", "GATEWAY_API_KEYS", "GATEWAY_CONFIG", "GATEWAY_ALLOW_OPEN"}
    prefixes = ("LEDGER_", "RATE_LIMIT_", "CACHE_", "CORS_", "LOG_", "GATEWAY_", "STREAM_", "CLIENT_BODY_")
    env = {k: v for k, v in os.environ.items()
           if k not in spec_vars and not k.startswith(prefixes) and k != "DATABASE_URL"}
    env.update({
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "GATEWAY_API_KEYS": f"{GATEWAY_KEY}:bench",
        "CACHE_ENABLED": "true" if cache else "false",
        "LOG_LEVEL": "info",
        "HOST": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    if config:
        env["GATEWAY_CONFIG"] = os.path.abspath(config)
    for kv in extra:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


class Gateway:
    """``python -m llm_gateway`` as a subprocess: stdout (the JSON log) to a file or /dev/null."""

    def __init__(self, children: Children, upstream_port: int, cache: bool, args: argparse.Namespace,
                 workdir: str) -> None:
        extra_env, log_path = args.gateway_env, args.gateway_log
        self.port = free_port()
        self.errlog = open(os.path.join(workdir, f"gateway-{self.port}.stderr"), "w+b")
        self.out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        # cwd: a scratch directory, so that no ./.env of the caller leaks in.
        self.proc = children.popen(
            [sys.executable, "-m", "llm_gateway", "--host", "127.0.0.1", "--port", str(self.port)],
            env=gateway_env(upstream_port, cache, extra_env, args.gateway_config), cwd=workdir, stdout=self.out, stderr=self.errlog)
        self.base = f"http://127.0.0.1:{self.port}"
        try:
            wait_until(lambda: http("GET", self.base + "/healthz", timeout=1)[0] == 200, 30, self.proc,
                       "the gateway")
        except RuntimeError as e:
            self.errlog.seek(0)
            raise RuntimeError(f"{e}\n--- gateway stderr ---\n{self.errlog.read().decode()[-3000:]}") from None
        self.pid = self.proc.pid


# ---------------------------------------------------------------------------- targets and measurements
@dataclass
class Target:
    name: str
    base: str  # ends with /v1
    key: str | None
    model: str
    pid: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.base.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        h.update(self.extra_headers)
        return h

    def body(self, stream: bool = False) -> bytes:
        b: dict[str, Any] = {"model": self.model, "max_tokens": 32,
                             "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
        if stream:
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
        return json.dumps(b, separators=(",", ":")).encode()

    def cpu(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds of the target's process tree."""
        return procfs.cpu_times(self.pid) if self.pid else None

    def memory(self) -> dict[str, float] | None:
        return procfs.memory_mb(self.pid) if self.pid else None


def foreign_cpu() -> float:
    """Machine-wide busy CPU seconds not spent by this benchmark's process tree (noise)."""
    return procfs.system_busy_seconds() - procfs.cpu_seconds(os.getpid())


class Bench:
    def __init__(self, args: argparse.Namespace, prof: dict[str, Any], children: Children,
                 wrk: loadgen.Wrk | None) -> None:
        self.args, self.prof, self.children, self.wrk = args, prof, children, wrk

    # ------------------------------------------------------------------ generators
    def load(self, t: Target, conns: int, seconds: float, max_requests: int | None = None) -> dict[str, Any]:
        if self.wrk is not None and seconds >= 1:
            return self.wrk.run(t.url, t.body(), t.headers(), conns, int(round(seconds)))
        return loadgen.run_loop(loadgen.raw_load(t.url, t.body(), t.headers(), conns, seconds, max_requests))

    def measured(self, t: Target, up: Upstream, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        c0, u0, f0 = t.cpu(), procfs.cpu_seconds(up.proc.pid), foreign_cpu()
        r = fn()
        c1, u1, f1 = t.cpu(), procfs.cpu_seconds(up.proc.pid), foreign_cpu()
        r["foreign_cpu_cores"] = (f1 - f0) / r["duration_s"] if r.get("duration_s") else None
        n = r.get("requests") or r.get("streams") or 0
        if c0 is not None and c1 is not None:
            cpu = sum(c1) - sum(c0)
            r["cpu_s"] = cpu
            r["cpu_system_share"] = (c1[1] - c0[1]) / cpu if cpu else None
            r["cpu_ms_per_req"] = cpu * 1000 / n if n else None
            r["cpu_ms_per_1000"] = cpu * 1e6 / n if n else None
        r["upstream_cpu_ms_per_req"] = (u1 - u0) * 1000 / n if n else None
        return r

    # ------------------------------------------------------------------ workloads
    def nonstream(self, t: Target, up: Upstream, conns: int, seconds: float) -> dict[str, Any]:
        warm = self.load(t, conns, self.prof["warmup_s"])
        r = self.measured(t, up, lambda: self.load(t, conns, seconds))
        r["warmup_requests"] = warm["requests"]
        return r

    def streams(self, t: Target, up: Upstream) -> dict[str, Any]:
        """Steady 16-stream concurrency (staggered starts) for CPU and TTFT, then one burst
        of 16 simultaneous starts whose TTFT is reported on its own."""
        a, p = self.args, self.prof
        stagger = p["chunks"] * p["interval_ms"] / 1000.0

        def run(rounds: int, stagger_s: float) -> dict[str, Any]:
            return loadgen.run_loop(loadgen.stream_load(t.url, t.body(stream=True), t.headers(), a.streams,
                                                        rounds, stagger_s))

        run(1, 0.0)  # warm-up
        r = self.measured(t, up, lambda: run(p["stream_rounds"], stagger))
        if "cpu_s" in r:
            r["cpu_us_per_chunk"] = r["cpu_s"] * 1e6 / r["chunks"] if r["chunks"] else None
        burst = run(p["burst_rounds"], 0.0)
        r["burst_ttft_p50_ms"] = burst["ttft_p50_ms"]
        r["burst_ttft_p99_ms"] = burst["ttft_p99_ms"]
        r["errors"] += burst["errors"]
        r["incomplete"] += burst["incomplete"]
        return r

    def soak(self, t: Target, up: Upstream) -> dict[str, Any]:
        """N requests in slices at 16 connections; RSS sampled once 10 % and 100 % are done."""
        n, cap, conns = self.args.requests or self.prof["soak_n"], self.prof["soak_cap_s"], 16
        up.configure(latency_ms=0)
        self.load(t, conns, self.prof["warmup_s"])
        done, dur, errors, rate = 0, 0.0, 0, 0.0
        c0, f0 = t.cpu(), foreign_cpu()
        start = time.monotonic()
        rss: dict[str, float | None] = {}
        for label, goal in (("rss_10_mb", 0.1 * n), ("rss_100_mb", float(n))):
            while done < goal * 0.99:
                left = cap - (time.monotonic() - start)
                if left <= 0.05:
                    break
                # wrk runs for whole seconds: size each slice from the rate so far.
                secs = 1.0 if not rate else (goal - done) / rate
                secs = min(max(secs, 0.05), left)
                if self.wrk is not None:
                    secs = max(1, math.ceil(secs))
                r = self.load(t, conns, secs, max_requests=math.ceil(goal - done))
                done, dur, errors = done + r["requests"], dur + r["duration_s"], errors + r["errors"]
                rate = done / dur if dur else 0.0
            m = t.memory()
            rss[label] = m["rss_mb"] if m else None
        c1 = t.cpu()
        foreign = (foreign_cpu() - f0) / (time.monotonic() - start)
        out: dict[str, Any] = {"requests": done, "target_requests": n, "errors": errors, "duration_s": dur,
                               "foreign_cpu_cores": foreign,
                               "rps": done / dur if dur else 0.0, "complete": done >= n * 0.99, **rss}
        if c0 is not None and c1 is not None and done:
            cpu = sum(c1) - sum(c0)
            out["cpu_s"] = cpu
            out["cpu_system_share"] = (c1[1] - c0[1]) / cpu if cpu else None
            out["cpu_ms_per_req"] = cpu * 1000 / done
            out["cpu_ms_per_1000"] = cpu * 1e6 / done
        if rss.get("rss_10_mb") and rss.get("rss_100_mb"):
            out["rss_growth_pct"] = (rss["rss_100_mb"] - rss["rss_10_mb"]) * 100 / rss["rss_10_mb"]
        return out

    def cache_hit(self, t: Target, up: Upstream, direct_p50: float | None) -> dict[str, Any]:
        up.configure(latency_ms=0)
        statuses = [loadgen.run_loop(loadgen.one_request(t.url, t.body(), t.headers())) for _ in range(2)]
        header = statuses[-1][1].get("x-gateway-cache")
        served0 = up.requests_served()
        lat = self.nonstream(t, up, 1, self.prof["cache_s"])
        tput = self.nonstream(t, up, 16, self.prof["cache_s"])
        reached = up.requests_served() - served0
        total = sum(r["requests"] + r["warmup_requests"] for r in (lat, tput))
        out = {
            "x_gateway_cache": header, "upstream_calls": reached,
            "hit_ratio": max(0.0, 1 - reached / total) if total else None,
            "c1": lat, "c16": tput,
            "p50_ms": lat["p50_ms"], "rps": tput["rps"],
            "cpu_ms_per_req": tput.get("cpu_ms_per_req"),
            "added_p50_ms": lat["p50_ms"] - direct_p50 if direct_p50 is not None else None,
        }
        return out


# ---------------------------------------------------------------------------- report
def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def check(value: Any, op: str, limit: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value <= limit if op == "<=" else value >= limit


def evaluate_targets(res: dict[str, Any], who: str) -> list[dict[str, Any]]:
    out = []
    for wl, metric, op, limit, label in TARGETS:
        src = res["memory"] if wl == "memory" else res["workloads"].get(wl, {})
        value = (src.get(who) or {}).get(metric)
        out.append({"who": who, "workload": wl, "metric": metric, "label": label, "op": op, "limit": limit,
                    "value": value, "pass": check(value, op, limit)})
    return out


def print_table(res: dict[str, Any], peer: str | None) -> None:
    w = res["workloads"]
    cols = ["direct", "gateway"] + ([peer] if peer else []) + ([REFERENCE] if REFERENCE in w["latency_c1"] else [])
    rows: list[tuple[str, list[Any], str, str]] = []
    targets = {(t["workload"], t["metric"]): t for t in res["targets"] if t["who"] == "gateway"}

    def row(label: str, wl: str, metric: str, who: list[str] | None = None) -> None:
        src = res["memory"] if wl == "memory" else w.get(wl, {})
        vals = [(src.get(c) or {}).get(metric) if (who is None or c in who) else None for c in cols]
        t = targets.get((wl, metric))
        tgt = f"{t['op']} {t['limit']:g}" if t else ""
        verdict = "" if not t else {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        rows.append((label, vals, tgt, verdict))

    def section(title: str) -> None:
        rows.append((title, [], "", ""))

    p = res["profile"]
    section("(a) concurrency 1, upstream latency 0")
    row("  requests/s", "latency_c1", "rps")
    row("  p50 latency (ms)", "latency_c1", "p50_ms")
    row("  p99 latency (ms)", "latency_c1", "p99_ms")
    row("  added p50 (ms)", "latency_c1", "added_p50_ms")
    row("  added p99 (ms)", "latency_c1", "added_p99_ms")
    row("  CPU-ms per request", "latency_c1", "cpu_ms_per_req")
    row("  CPU per 1000 requests (ms)", "latency_c1", "cpu_ms_per_1000")
    section(f"(b) {p['concurrency']} connections, upstream latency {p['upstream_latency_ms']:g} ms")
    row("  requests/s", "throughput_c64", "rps")
    row("  p50 latency (ms)", "throughput_c64", "p50_ms")
    row("  p99 latency (ms)", "throughput_c64", "p99_ms")
    row("  throughput / direct", "throughput_c64", "ratio")
    row("  CPU-ms per request", "throughput_c64", "cpu_ms_per_req")
    row("  CPU per 1000 requests (ms)", "throughput_c64", "cpu_ms_per_1000")
    section(f"(c) {p['streams']} concurrent streams x {p['chunks']} chunks @ {p['interval_ms']:g} ms (staggered starts)")
    row("  chunks/s", "streams", "chunks_per_s")
    row("  TTFT p50 (ms)", "streams", "ttft_p50_ms")
    row("  TTFT p99 (ms)", "streams", "ttft_p99_ms")
    row("  added TTFT p50 (ms)", "streams", "added_ttft_p50_ms")
    row("  TTFT p50, 16 simultaneous starts (ms)", "streams", "burst_ttft_p50_ms")
    row("  added TTFT p50, simultaneous (ms)", "streams", "added_burst_ttft_p50_ms")
    row("  CPU-µs per chunk", "streams", "cpu_us_per_chunk")
    section(f"(d) soak, {p['soak_n']:,} requests at 16 connections, upstream latency 0")
    row("  requests done", "soak", "requests")
    row("  requests/s", "soak", "rps")
    row("  CPU-ms per request", "soak", "cpu_ms_per_req")
    row("  CPU per 1000 requests (ms)", "soak", "cpu_ms_per_1000")
    row("  of which kernel (system) share", "soak", "cpu_system_share")
    row("  RSS at 10% (MB)", "soak", "rss_10_mb")
    row("  RSS at 100% (MB)", "soak", "rss_100_mb")
    row("  RSS growth (%)", "soak", "rss_growth_pct")
    section("memory, whole process tree")
    row("  peak RSS, VmHWM (MB)", "memory", "peak_mb")
    row("  RSS at the end (MB)", "memory", "rss_mb")
    if "cache_hit" in w:
        section("(e) cache hits (second gateway, CACHE_ENABLED=true, identical bodies)")
        row("  hit ratio", "cache_hit", "hit_ratio", ["gateway"])
        row("  p50 latency c=1 (ms)", "cache_hit", "p50_ms", ["gateway"])
        row("  added p50 vs direct (ms)", "cache_hit", "added_p50_ms", ["gateway"])
        row("  requests/s at 16 conns", "cache_hit", "rps", ["gateway"])
        row("  CPU-ms per request", "cache_hit", "cpu_ms_per_req", ["gateway"])

    header = ["figure", *cols, "target", "gateway"]
    table = [[label, *(fmt(v) for v in (vals or [""] * len(cols))), tgt, verdict]
             for label, vals, tgt, verdict in rows]
    sized = [r for r, (_, vals, _, _) in zip(table, rows) if vals]
    widths = [max(len(str(r[i])) for r in [header, *sized]) for i in range(len(header))]
    line = "  ".join("-" * x for x in widths)
    print(line)
    print("  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    print(line)
    for r, (_, vals, _, _) in zip(table, rows):
        if not vals:
            print(r[0])
            continue
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    print(line)


# ---------------------------------------------------------------------------- main
def machine(wrk: loadgen.Wrk | None) -> dict[str, Any]:
    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v
            return v(mod)
        except Exception:
            return None

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or None
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "llm_gateway"],
                                capture_output=True, text=True, check=False).stdout.strip())
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": procfs.cpu_model(), "kernel": platform.release(),
        "python": platform.python_version(), "aiohttp": version("aiohttp"), "uvloop": version("uvloop"),
        "orjson": version("orjson"), "wrk": wrk.version() if wrk else None,
        "git_commit": commit, "llm_gateway_modified": dirty, "loadavg_at_start": loadavg(), **idle_penalty(),
    }


def idle_penalty(rounds: int = 150) -> dict[str, float]:
    """How much slower the same small piece of Python work runs right after 5 ms of idle
    than back to back (caches and CPU state after a wake-up; large on some VMs). Streams
    are processed a chunk at a time between idle gaps, so this bounds what their figures
    can reach on this machine."""
    import statistics

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello there"}] * 4}).encode()

    def work() -> float:
        t0 = time.perf_counter()
        for _ in range(2):  # ~20 µs warm: the size of the gateway's work per streamed chunk
            d = json.loads(body)
            d["n"] = 1
            json.dumps(d)
        return time.perf_counter() - t0

    for _ in range(50):
        work()
    warm = statistics.median(work() for _ in range(rounds))
    cold = []
    for _ in range(rounds):
        time.sleep(0.005)
        cold.append(work())
    return {"work_back_to_back_us": warm * 1e6, "work_after_idle_ratio": statistics.median(cold) / warm}


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_mutually_exclusive_group()
    m.add_argument("--quick", action="store_true", help="short run (under a minute)")
    m.add_argument("--smoke", action="store_true", help="a few seconds, tiny counts (the smoke test)")
    p.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    p.add_argument("--no-wrk", action="store_true", help="use the asyncio client even if wrk is installed")
    p.add_argument("--no-install", action="store_true", help="never try 'apt-get install wrk' when root")
    p.add_argument("--no-cache-run", action="store_true", help="skip workload (e), the cache-hit gateway")
    p.add_argument("--no-floor", action="store_true", help="skip the floors: workload (c) through a raw TCP relay, "
                   "(a), (b) and (c) through a bare aiohttp pass-through")
    p.add_argument("--requests", type=int, help="soak size (default 100,000; --quick 8,000)")
    p.add_argument("--concurrency", type=int, default=64, help="connections for workload (b)")
    p.add_argument("--upstream-latency-ms", type=float, default=50.0, help="upstream latency for workload (b)")
    p.add_argument("--streams", type=int, default=16, help="concurrent streams for workload (c)")
    p.add_argument("--chunks", type=int, help="content chunks per stream (default 100)")
    p.add_argument("--interval-ms", type=float, help="upstream time between chunks (default 5)")
    p.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the gateway (repeatable), e.g. to switch a feature on")
    p.add_argument("--gateway-config", metavar="PATH", help="a TOML config for the gateway (GATEWAY_CONFIG), "
                   "e.g. bench/limits.toml to put the rate limiter on the path")
    p.add_argument("--gateway-log", metavar="PATH", help="keep the gateway's JSON log here (default /dev/null)")
    p.add_argument("--upstream-port", type=int, default=0, help="fix the fake upstream's port (for a peer)")
    p.add_argument("--peer-url", help="base URL (with /v1) of another OpenAI-compatible gateway to measure")
    p.add_argument("--peer-name", default="peer", help="column name for the peer")
    p.add_argument("--peer-key", default=os.environ.get("PEER_API_KEY", "sk-bench-peer"),
                   help="API key sent to the peer (env PEER_API_KEY)")
    p.add_argument("--peer-model", default=MODEL, help="model name the peer routes to the fake upstream")
    p.add_argument("--peer-header", action="append", default=[], metavar="NAME:VALUE",
                   help="an extra header for the peer's requests (repeatable), e.g. Portkey's "
                        "x-portkey-provider:openai; {upstream} in a value becomes the fake upstream's base URL")
    p.add_argument("--peer-pid", type=int, help="peer's root pid for CPU/memory (default: who listens on its port)")
    p.add_argument("--peer-wait", type=float, default=300.0, help="seconds to wait for the peer to answer")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    prof = dict(PROFILES[mode])
    prof.update(mode=mode, concurrency=args.concurrency, upstream_latency_ms=args.upstream_latency_ms,
                streams=args.streams, chunks=args.chunks or prof.get("chunks", 100),
                interval_ms=args.interval_ms if args.interval_ms is not None else prof.get("interval_ms", 5.0),
                soak_n=args.requests or prof["soak_n"])
    bound = int(prof["max_s"] + (args.peer_wait + prof["soak_cap_s"] + 120 if args.peer_url else 0))

    def overrun(*_: Any) -> None:
        raise TimeoutError(f"the benchmark ran over its {bound} s bound")

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(bound)

    children = Children()
    atexit.register(children.stop_all)
    workdir = tempfile.mkdtemp(prefix="llmgw-bench-")
    wrk = None
    if not args.no_wrk:
        path = loadgen.find_wrk(install=not args.no_install)
        if path:
            wrk = loadgen.Wrk(path, popen=children.popen, done=children.stop, workdir=workdir)
        else:
            print(f"note: wrk not found, using the asyncio client for non-streaming load; {loadgen.WRK_HINT}")
    started = time.time()
    try:
        up = Upstream(children, args.upstream_port)
        direct = Target("direct", up.base + "/v1", None, MODEL)
        gw = Gateway(children, up.port, cache=False, args=args, workdir=workdir)
        gateway = Target("gateway", gw.base + "/v1", GATEWAY_KEY, MODEL, gw.pid)
        targets = [direct, gateway]
        peer = None
        if args.peer_url:
            peer = Target(args.peer_name, args.peer_url.rstrip("/"), args.peer_key, args.peer_model)
            for hv in args.peer_header:
                name, _, value = hv.partition(":")
                peer.extra_headers[name.strip()] = value.strip().replace("{upstream}", up.base)
            if not peer.base.endswith("/v1"):
                peer.base += "/v1"
            print(f"fake upstream: {up.base}/v1  (OpenAI wire format, any API key, model {args.peer_model!r})")
            print(f"point {args.peer_name} at it; waiting up to {args.peer_wait:g} s for {peer.url} ...", flush=True)
            wait_until(lambda: http("POST", peer.url, peer.body(), peer.headers(), timeout=5)[0] == 200,
                       args.peer_wait, None, f"the peer at {peer.url}")
            port = int(peer.base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]) \
                if ":" in peer.base.split("://", 1)[1].split("/", 1)[0] else 80
            peer.pid = args.peer_pid or procfs.pid_listening_on(port)
            if not peer.pid:
                print("note: could not find the peer's process: its CPU and memory are not measured (--peer-pid)")
            targets.append(peer)

        ref = None  # the framework's floor: aiohttp's server and client with none of the gateway's features
        if not args.no_floor:
            pt = Passthrough(children, up.base)
            ref = Target(REFERENCE, pt.base + "/v1", None, MODEL, pt.proc.pid)
        # Fail fast on a misconfiguration rather than measure error pages.
        for t in targets + ([ref] if ref else []):
            for stream in (False, True):
                status, _, body = http("POST", t.url, t.body(stream), t.headers(), timeout=10)
                if status != 200:
                    raise RuntimeError(f"{t.name}: probe request (stream={stream}) answered {status}: {body[:500]!r}")

        bench = Bench(args, prof, children, wrk)
        res: dict[str, Any] = {"mode": mode, "command": " ".join(shlex.quote(a) for a in [
            os.path.relpath(sys.executable, os.getcwd()) if sys.executable.startswith(os.getcwd()) else sys.executable,
            *sys.argv]), "machine": machine(wrk), "profile": prof,
            "load_client": "wrk" if wrk else "asyncio", "stream_client": "aiohttp", "workloads": {}, "memory": {}}
        w = res["workloads"]

        def each(label: str, fn: Callable[[Target], dict[str, Any]], who: list[Target]) -> dict[str, Any]:
            out = {}
            for t in who:
                print(f"  {label}: {t.name} ...", flush=True)
                out[t.name] = fn(t)
            return out

        print(f"llm-gateway benchmark ({mode}); load client: {res['load_client']}; "
              f"{res['machine']['nproc']} CPUs, {res['machine']['cpu_model']}", flush=True)
        if (res["machine"]["loadavg_at_start"] or 0) > 0.5:
            print(f"note: load average {res['machine']['loadavg_at_start']} before the run: something else is "
                  "using the CPUs, the figures will be noisy", flush=True)
        # (a)
        up.configure(latency_ms=0)
        with_ref = targets + ([ref] if ref else [])
        w["latency_c1"] = each("(a) concurrency 1", lambda t: bench.nonstream(t, up, 1, prof["lat_s"]), with_ref)
        # (b)
        up.configure(latency_ms=args.upstream_latency_ms)
        w["throughput_c64"] = each(f"(b) {args.concurrency} connections",
                                   lambda t: bench.nonstream(t, up, args.concurrency, prof["tput_s"]), with_ref)
        # (c)
        up.configure(latency_ms=0, chunks=prof["chunks"], interval_ms=prof["interval_ms"])
        w["streams"] = each("(c) streams", lambda t: bench.streams(t, up), with_ref)
        if ref is not None:
            children.stop(pt.proc)
        if not args.no_floor:  # the same streams through a raw TCP relay: what the machine itself costs
            print("  (c) streams: floor (raw TCP relay) ...", flush=True)
            relay = Relay(children, up.port)
            w["streams"]["floor"] = bench.streams(Target("floor", relay.base + "/v1", None, MODEL, relay.proc.pid), up)
            children.stop(relay.proc)
        # (d)
        w["soak"] = each("(d) soak", lambda t: bench.soak(t, up), targets[1:])
        for t in targets[1:]:
            m = t.memory()
            if m:
                res["memory"][t.name] = {"peak_mb": m["hwm_mb"], "rss_mb": m["rss_mb"], "processes": m["processes"]}

        for wl in ("latency_c1", "throughput_c64"):
            base = w[wl]["direct"]
            for name in [n for n in w[wl] if n != "direct"]:
                r = w[wl][name]
                r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
                r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
                r["ratio"] = r["rps"] / base["rps"] if base["rps"] else None
        for name in [n for n in w["streams"] if n != "direct"]:
            for k in ("ttft_p50_ms", "burst_ttft_p50_ms"):
                w["streams"][name]["added_" + k] = w["streams"][name][k] - w["streams"]["direct"][k]

        # (e) the cache-hit path, on a second gateway
        children.stop(gw.proc)
        if not args.no_cache_run:
            print("  (e) cache hits: gateway with CACHE_ENABLED=true ...", flush=True)
            gw2 = Gateway(children, up.port, cache=True, args=args, workdir=workdir)
            cached = Target("gateway", gw2.base + "/v1", GATEWAY_KEY, MODEL, gw2.pid)
            w["cache_hit"] = {"gateway": bench.cache_hit(cached, up, w["latency_c1"]["direct"]["p50_ms"])}
            children.stop(gw2.proc)

        res["targets"] = evaluate_targets(res, "gateway") + (evaluate_targets(res, peer.name) if peer else [])
        res["elapsed_s"] = time.time() - started
        res["machine"]["loadavg_at_end"] = loadavg()
        errors = {f"{wl}/{who}": r.get("errors") for wl, rs in w.items() for who, r in rs.items()
                  if isinstance(r, dict) and r.get("errors")}
        bad_streams = {who: r for who, r in w["streams"].items() if r.get("incomplete") or r.get("errors")}
        res["errors"] = errors
        res["ok"] = not any(k.endswith("/gateway") or k.endswith("/direct") for k in errors) and \
            not ({"gateway", "direct"} & set(bad_streams))

        print()
        print_table(res, peer.name if peer else None)
        fl = w["streams"].get("floor")
        if fl is not None:
            print(f"floor for (c): the same streams through a raw TCP relay (bench/relay.py: no HTTP parsing, "
                  f"bytes copied as they arrive): {fmt(fl.get('cpu_us_per_chunk'))} CPU-µs per chunk, "
                  f"added TTFT p50 {fmt(fl.get('added_ttft_p50_ms'))} ms")
        if REFERENCE in w["latency_c1"]:
            print(f"{REFERENCE!r} column: (a), (b) and (c) through bench/passthrough.py, aiohttp's server and client "
                  "forwarding each request and each streamed piece as read, with none of the gateway's features "
                  "(the framework's own cost on this machine)")
        ch = w.get("cache_hit", {}).get("gateway")
        if ch is not None and ch.get("x_gateway_cache") != "HIT":
            print(f"note: the cache run's repeat request answered X-Gateway-Cache={ch.get('x_gateway_cache')!r}: "
                  "the cache-hit figures are not cache hits")
        if wl_incomplete := [t for t in targets[1:] if not w["soak"][t.name].get("complete")]:
            print("note: soak stopped at its time cap before N requests for: " + ", ".join(t.name for t in wl_incomplete))
        noisy = {f"{wl}/{who}": round(r["foreign_cpu_cores"], 2) for wl, rs in w.items() for who, r in rs.items()
                 if isinstance(r, dict) and (r.get("foreign_cpu_cores") or 0) > 0.1
                 and (r.get("duration_s") or 0) >= 2}  # /proc/stat ticks are too coarse for shorter runs
        res["noise"] = noisy
        if noisy:
            print(f"note: other processes used CPU during these workloads (cores): {noisy}; "
                  "the figures are disturbed, re-run on a quiet machine")
        if errors:
            print(f"ERRORS during the run (failed or non-2xx requests): {errors}")
        if bad_streams:
            print(f"ERRORS in streams: { {k: (v.get('errors'), v.get('incomplete')) for k, v in bad_streams.items()} }")
        m = res["machine"]
        print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}, "
              f"uvloop {m['uvloop']}, {m['wrk'] or 'wrk absent'}; {res['elapsed_s']:.0f} s; command: {res['command']}")
        if m.get("work_after_idle_ratio"):
            print(f"machine: a fixed piece of Python work takes {m['work_after_idle_ratio']:.1f}x as long right after "
                  f"5 ms idle as back to back ({m['work_back_to_back_us']:.1f} µs warm): per-chunk and "
                  "first-token figures, which run after idle gaps, depend on this")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
            print(f"results written to {args.json}")
        return 0 if res["ok"] else 1
    finally:
        signal.alarm(0)
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench/run.py reads /proc: Linux only", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        return run(args)
    except (RuntimeError, TimeoutError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
