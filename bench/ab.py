"""Interleaved A/B of gateway variants: the way changes here are judged.

CPU time on a shared VM drifts by a third between runs, so two variants are compared
in one process, round after round, each gateway started once and measured in turn
with the same load against the same fake upstream::

    .venv/bin/python bench/ab.py --rounds 4 --seconds 6 new= old=PYTHONPATH=/tmp/old
    .venv/bin/python bench/ab.py base= noledger=LEDGER_PATH=off --workloads a

A variant is ``NAME=`` followed by comma-separated ``KEY=VALUE`` gateway environment
(``PYTHONPATH=DIR`` runs another checkout's code: ``git worktree add /tmp/old REV``).
Workloads: ``a`` (1 connection, upstream latency 0), ``b`` (64 connections, 50 ms),
``s`` (16 connections, 0 ms). Prints each measurement and the medians: CPU-ms per
request (the gateway's process tree, from /proc), p50 latency (ms), requests/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import run as R  # noqa: E402

LOADS = {"a": (1, 0.0), "b": (64, 50.0), "s": (16, 0.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", help="NAME=KEY=VALUE,KEY=VALUE (or NAME= for the defaults)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workloads", default="a,b", help="comma-separated: a, b, s")
    p.add_argument("--no-wrk", action="store_true", help="the asyncio client even if wrk is installed")
    a = p.parse_args(argv)
    wls = [w.strip() for w in a.workloads.split(",") if w.strip()]
    if not set(wls) <= set(LOADS):
        p.error(f"unknown workload in {a.workloads!r}")
    children = R.Children()
    try:
        up = R.Upstream(children, R.free_port())
        path = None if a.no_wrk else shutil.which("wrk")
        wrk = loadgen.Wrk(path, popen=children.popen, done=children.stop) if path else None
        work = tempfile.mkdtemp(prefix="llmgw-ab-")
        targets = {}
        for spec in a.variants:
            name, _, envs = spec.partition("=")
            args = argparse.Namespace(gateway_env=[e for e in envs.split(",") if e], gateway_log=None,
                                      gateway_config=None)
            wd = os.path.join(work, name)
            os.makedirs(wd)
            g = R.Gateway(children, up.port, False, args, wd)
            targets[name] = R.Target(name, g.base + "/v1", R.GATEWAY_KEY, R.MODEL, g.pid)
        bench = R.Bench(argparse.Namespace(), {"warmup_s": a.warmup}, children, wrk)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for r in range(a.rounds):
            for w in wls:
                conns, latency = LOADS[w]
                up.configure(latency_ms=latency)
                for name, t in targets.items():
                    x = bench.nonstream(t, up, conns, a.seconds)
                    m = (x.get("cpu_ms_per_req") or 0.0, x["p50_ms"], x["rps"])
                    results.setdefault((w, name), []).append(m)
                    print(f"round {r} {w} {name}: cpu {m[0]:.4f} ms  p50 {m[1]:.4f} ms  {m[2]:.0f} req/s", flush=True)
        for (w, name), ms in results.items():
            med = [statistics.median(x[i] for x in ms) for i in range(3)]
            print(f"MEDIAN {w} {name}: cpu {med[0]:.4f} ms  p50 {med[1]:.4f} ms  {med[2]:.1f} req/s")
    finally:
        children.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
