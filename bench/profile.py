#!/usr/bin/env python3
"""Where the gateway's CPU goes: py-spy against the benchmark's gateway under load.

    .venv/bin/pip install py-spy          # a tool, not a dependency of the project
    .venv/bin/python bench/profile.py                    # non-streaming, 16 connections, 15 s
    .venv/bin/python bench/profile.py --workload stream  # 16 SSE streams
    .venv/bin/python bench/profile.py --out /tmp/gw.txt  # keep the collapsed stacks (flamegraph input)

Starts the fake upstream and the gateway exactly as bench/run.py does (every feature on
except the response cache), drives load (wrk, else the asyncio client), records the
gateway with ``py-spy record --format raw --nolineno --gil`` and prints the hot spots: self time
per function, inclusive time per function, and inclusive time per component (module
groups), as percentages of the gateway's busy samples. By default only samples that hold
the GIL count (``--gil``): that is the gateway's Python work, with little perturbation;
``--native`` also shows time inside system calls (socket writes, getpid) but slows the
gateway down while it samples. Needs ptrace rights (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procfs  # noqa: E402
from run import GATEWAY_KEY, MODEL, Children, Gateway, Target, Upstream, parse_args as run_args  # noqa: E402

#: component → patterns matched against "function (file)" frames; first match wins per frame,
#: and a sample counts once for each component present in its stack (inclusive).
COMPONENTS: list[tuple[str, str]] = [
    ("JSON logs (logging + python-json-logger)", r"\(logging/|pythonjsonlogger|llm_gateway/logging\.py"),
    ("access-log middleware", r"access_log\.py"),
    ("auth middleware", r"middleware/auth\.py"),
    ("rate-limit middleware", r"middleware/ratelimit\.py|llm_gateway/limits/"),
    ("body middleware", r"middleware/body\.py"),
    ("cache (look-up / store)", r"llm_gateway/cache/"),
    ("metrics", r"llm_gateway/metrics\.py|handlers/metrics\.py"),
    ("ledger", r"llm_gateway/ledger/"),
    ("cost / tokens", r"llm_gateway/cost\.py|llm_gateway/tokens\.py|bpe_openai"),
    ("validation (parse_chat)", r"llm_gateway/validation\.py"),
    ("router + retry + health", r"llm_gateway/routing/"),
    ("adapter (openai)", r"llm_gateway/adapters/"),
    ("SSE parse/frame", r"llm_gateway/sse\.py"),
    ("upstream client (aiohttp client)", r"aiohttp/client|aiohttp/connector|llm_gateway/upstream\.py"),
    ("aiohttp server (web_protocol, web_response)", r"aiohttp/web_"),
    ("asyncio (timeouts, tasks)", r"\(asyncio/"),
]


#: specific costs worth a line of their own (inclusive share; a regex over frames)
NOTABLE: list[tuple[str, str]] = [
    ("logging: LogRecord creation", r"^LogRecord\.__init__ "),
    ("logging: findCaller stack walk per line", r"^Logger\.findCaller "),
    ("logging: formatter (add_fields, JSON)", r"^(GatewayFormatter|OrjsonFormatter|JsonFormatter)\."),
    ("logging: handler write/flush", r"^StreamHandler\.(emit|flush) "),
    ("request ids: uuid4()", r"^uuid4 "),
    ("asyncio.timeout() enter/exit/reschedule", r"^(timeout|Timeout\.\w+) \(asyncio/timeouts"),
    ("metrics (prometheus_client)", r"prometheus_client|llm_gateway/metrics\.py"),
    ("ledger: row + queue on the event loop", r"^(LedgerRow\.|Ledger\.(record|hook))"),
    ("ledger: SQLite writes (own thread)", r"^SQLiteStore\._write "),
    ("request JSON parse + validation", r"^parse_chat "),
    ("cyclic GC (native frames only)", r"^gc_collect|^collect_with_callback"),
    ("getpid() syscalls (native frames only)", r"^getpid "),
]


def parse_collapsed(path: str) -> list[tuple[list[str], int]]:
    out = []
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def short(frame: str) -> str:
    # "function (path/to/file.py)" → "function (package/file.py)"
    m = re.match(r"(.*) \((.*)\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    for anchor in ("site-packages/", "lib/python3", str(Path(__file__).resolve().parent.parent) + "/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    path = re.sub(r"^\.\d+/", "", path)
    return f"{fn} ({path})"


_PY_FRAME = re.compile(r"\((?:[^()]*\.py|<frozen [^>]+>)\)$")
#: a sample is idle when the loop waits in epoll or a pool thread waits for work
_IDLE_LEAF = re.compile(r"^(epoll_pwait|epoll_wait|__GI_epoll_pwait|__GI_epoll_wait) ")
_IDLE_ANY = re.compile(r"^_queue_SimpleQueue_get|^PyThread_acquire_lock_timed|^Condition\.wait |^select ")
_SYSCALL = re.compile(r"^(write|writev|send|sendmsg|sendto|read|readv|recv|recvfrom|recvmsg|getpid|epoll_ctl|"
                      r"clock_gettime|getrandom|futex|fdatasync|fsync|pwrite64|pread64|openat|close)\b")


def is_idle(frames: list[str]) -> bool:
    return bool(_IDLE_LEAF.match(frames[-1])) or any(_IDLE_ANY.match(f) for f in frames)


def report(stacks: list[tuple[list[str], int]], top: int) -> tuple[str, int, int]:
    """(text, busy samples, idle samples)."""
    busy = [(f, n) for f, n in stacks if not is_idle(f)]
    idle = sum(n for f, n in stacks if is_idle(f))
    total = sum(n for _, n in busy)
    if not total:
        return "no busy samples (is the gateway loaded? does py-spy have ptrace rights?)", 0, idle
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    comp: collections.Counter[str] = collections.Counter()
    for frames, n in busy:
        py = [short(f) for f in frames if _PY_FRAME.search(f)] or [short(frames[-1])]
        leaf = frames[-1]
        key = py[-1]
        if (m := _SYSCALL.match(leaf)) and not _PY_FRAME.search(leaf):
            key += f" -> {m.group(1)}()"
        self_t[key] += n
        for f in set(py):
            incl[f] += n
        seen = set()
        for f in py:
            for name, pat in COMPONENTS:
                if re.search(pat, f):
                    seen.add(name)
                    break
        if _SYSCALL.match(leaf) and not _PY_FRAME.search(leaf):
            seen.add("system calls (socket read/write, getpid, ...)")
        for name in seen:
            comp[name] += n
    lines = [f"{total} busy samples ({idle} idle samples dropped: epoll waits, idle pool threads)\n",
             "inclusive time by component (a sample counts for every component on its stack):"]
    for name, n in comp.most_common():
        lines.append(f"  {100 * n / total:5.1f} %  {name}")
    lines.append("\nnotable costs (inclusive):")
    for name, pat in NOTABLE:
        n = sum(k for frames, k in busy if any(re.search(pat, short(f)) for f in frames))
        if n:
            lines.append(f"  {100 * n / total:5.1f} %  {name}")
    lines.append(f"\ntop {top} by self time (innermost Python function; '-> write()' = in that system call):")
    for f, n in self_t.most_common(top):
        lines.append(f"  {100 * n / total:5.1f} %  {f}")
    lines.append(f"\ntop {top} functions by inclusive time (entry points and the event loop left out):")
    shown = 0
    for f, n in incl.most_common():
        if re.search(r"\((asyncio|runpy|threading)|run_app|run_forever|<module>|_run_module|_run_code|main \(|"
                     r"serve \(|uvloop|_handle_request|web_app\.py|web_middlewares\.py", f):
            continue
        lines.append(f"  {100 * n / total:5.1f} %  {f}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(lines), total, idle


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("nonstream", "stream"), default="nonstream")
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", help="keep py-spy's collapsed stacks here")
    p.add_argument("--native", action="store_true",
                   help="py-spy --native instead of --gil: C frames and system calls show, idle epoll waits are "
                        "recognised and dropped; but unwinding pauses the gateway often, so it serves less load")
    p.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--gateway-config", metavar="PATH")
    a = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    children = Children()
    workdir = tempfile.mkdtemp(prefix="llmgw-profile-")
    out = a.out or os.path.join(workdir, "stacks.txt")
    gw_args = run_args([])
    gw_args.gateway_env, gw_args.gateway_config = a.gateway_env, a.gateway_config
    try:
        up = Upstream(children, 0)
        gw = Gateway(children, up.port, cache=False, args=gw_args, workdir=workdir)
        t = Target("gateway", gw.base + "/v1", GATEWAY_KEY, MODEL, gw.pid)
        up.configure(latency_ms=0, chunks=100, interval_ms=5)
        wrk_path = shutil.which("wrk")

        def load(seconds: int) -> dict:
            if a.workload == "stream":
                rounds = max(1, int(seconds / 0.55))
                return loadgen.run_loop(loadgen.stream_load(t.url, t.body(True), t.headers(), 16, rounds, 0.5))
            if wrk_path:
                return loadgen.Wrk(wrk_path, popen=children.popen, done=children.stop, workdir=workdir).run(
                    t.url, t.body(), t.headers(), a.concurrency, seconds)
            return loadgen.run_loop(loadgen.raw_load(t.url, t.body(), t.headers(), a.concurrency, seconds))

        load(2)  # warm-up
        result: dict = {}
        th = threading.Thread(target=lambda: result.update(load(a.seconds + 2) or {}))
        th.start()
        time.sleep(0.5)
        c0 = procfs.cpu_seconds(gw.pid)
        rec = subprocess.run([spy, "record", "--pid", str(gw.pid), "--duration", str(a.seconds), "--rate",
                              str(a.rate), "--format", "raw", "--nolineno", "--output", out,
                              *(["--native"] if a.native else ["--gil"])],
                             capture_output=True, text=True, check=False)
        cpu = procfs.cpu_seconds(gw.pid) - c0
        th.join()
        if rec.returncode != 0:
            print(f"py-spy failed: {rec.stderr.strip()}", file=sys.stderr)
            return 1
        text, busy, idle = report(parse_collapsed(out), a.top)
        kept = f"stacks in {out}" if a.out else "stacks not kept (--out PATH)"
        print(f"gateway profile, workload {a.workload}, {a.seconds} s at {a.rate} Hz; {kept}")
        print(f"gateway CPU while sampled: {cpu:.2f} s (~{cpu / a.seconds:.2f} cores); busy samples cover "
              f"{busy / a.rate:.2f} s" + (f"; {result['requests']} requests" if result.get("requests") else ""))
        print()
        print(text)
        return 0
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
