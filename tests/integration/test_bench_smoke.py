"""The benchmark still runs: ``bench/run.py --smoke`` for a few seconds, sane numbers.

Speed is measured in bench/, never asserted here: this only checks that the script
starts the fake upstream and the gateway, drives every workload and writes its JSON.
It uses the asyncio client (``--no-wrk``) so CI needs no wrk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc")


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--no-wrk", "--no-install", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    res = json.loads(out.read_text())
    assert {"machine", "profile", "workloads", "memory", "targets", "command", "ok"} <= res.keys()
    assert res["ok"] is True
    w = res["workloads"]
    assert {"latency_c1", "throughput_c64", "streams", "soak", "cache_hit"} <= w.keys()
    for wl in ("latency_c1", "throughput_c64"):
        for who in ("direct", "gateway"):
            r = w[wl][who]
            assert r["requests"] > 0 and r["rps"] > 0 and r["errors"] == 0
            assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert w[wl]["gateway"]["cpu_ms_per_req"] > 0
        assert w[wl]["gateway"]["ratio"] > 0
    streams = w["streams"]["gateway"]
    assert streams["streams"] > 0 and streams["chunks"] == streams["streams"] * res["profile"]["chunks"]
    assert streams["usage_chunks"] == streams["streams"] and streams["incomplete"] == 0
    assert streams["ttft_p50_ms"] > 0 and streams["cpu_us_per_chunk"] > 0
    floor = w["streams"]["floor"]  # the same streams through bench/relay.py, byte for byte
    assert floor["chunks"] == streams["chunks"] and floor["incomplete"] == 0 and floor["errors"] == 0
    ref = w["streams"]["bare aiohttp"]  # bench/passthrough.py: the framework with none of the features
    assert ref["chunks"] == streams["chunks"] and ref["incomplete"] == 0 and ref["errors"] == 0
    assert w["latency_c1"]["bare aiohttp"]["requests"] > 0 and w["latency_c1"]["bare aiohttp"]["errors"] == 0
    tput = w["throughput_c64"]["bare aiohttp"]  # and (b): the throughput ratio the framework itself reaches
    assert tput["requests"] > 0 and tput["errors"] == 0 and tput["ratio"] > 0
    assert res["machine"]["work_after_idle_ratio"] > 0
    soak = w["soak"]["gateway"]
    assert soak["requests"] >= res["profile"]["soak_n"] * 0.99 and soak["rss_10_mb"] > 0 and soak["rss_100_mb"] > 0
    assert res["memory"]["gateway"]["peak_mb"] > 0
    assert w["cache_hit"]["gateway"]["rps"] > 0
    names = {(t["workload"], t["metric"]) for t in res["targets"]}
    assert ("latency_c1", "added_p50_ms") in names and ("throughput_c64", "ratio") in names
    assert "PASS" in proc.stdout or "MISS" in proc.stdout


def test_ab_smoke(tmp_path: Path) -> None:
    """bench/ab.py, the interleaved A/B changes are judged by, still measures two variants."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ab.py"), "--rounds", "1", "--seconds", "1", "--warmup", "0.5",
         "--workloads", "a", "--no-wrk", "base=", "quiet=LOG_LEVEL=warning"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    medians = [line for line in proc.stdout.splitlines() if line.startswith("MEDIAN a ")]
    assert [m.split()[2] for m in medians] == ["base:", "quiet:"]
    assert all(float(m.split()[4]) > 0 for m in medians)  # CPU-ms per request, from /proc
