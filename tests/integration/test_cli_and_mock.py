"""The real command on a fresh machine: no key → the mock provider; flags and .env."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL")
             and k not in ("HOST", "PORT", "GATEWAY_API_KEYS", "GATEWAY_CONFIG", "LOG_LEVEL")}


async def start(args: list[str], env: dict[str, str], cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_gateway", *args, env={**CLEAN_ENV, **env}, cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return proc, ""


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            if proc.returncode is not None:
                err = await proc.stderr.read()
                raise AssertionError(f"gateway exited: {err.decode()[-2000:]}")
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        assert await r.json() == {"status": "ok"}
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become healthy")


async def stop(proc: asyncio.subprocess.Process) -> list[dict]:
    proc.terminate()
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return [orjson.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def test_fresh_machine_serves_mock(tmp_path):
    port = free_port()
    proc, _ = await start(["--port", str(port)], {}, tmp_path)
    url = f"http://127.0.0.1:{port}"
    stack = contextlib.AsyncExitStack()
    try:
        await wait_healthy(url, proc)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        await stack.enter_async_context(client)
        resp = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Hello there"}])
        assert "simulated" in resp.choices[0].message.content
        assert "Hello there" in resp.choices[0].message.content
        assert resp.model == "mock-1"
        stream = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "Hello there"}], stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        async for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
            usage = c.usage or usage
        assert text == resp.choices[0].message.content  # deterministic
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
        models = await client.models.list()
        assert [m.id for m in models.data] == ["mock-1"]
    finally:
        await stack.aclose()
        lines = await stop(proc)
    startup = [ln for ln in lines if ln.get("event") == "startup"]
    assert any("mock" in ln["message"] and ln["level"] == "warning" for ln in startup)
    assert {"request", "response"} <= {ln.get("event") for ln in lines}


async def test_env_file_and_flag_precedence(tmp_path):
    port, other = free_port(), free_port()
    (tmp_path / ".env").write_text(f"PORT={other}\nLOG_LEVEL=debug\n")
    # the flag wins over .env; .env is read from the working directory by default
    proc, _ = await start(["--port", str(port)], {}, tmp_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        lines = await stop(proc)
    assert any(ln.get("level") == "debug" for ln in lines)  # LOG_LEVEL came from .env


async def test_refuses_open_bind_without_keys(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_gateway", "--host", "0.0.0.0", "--port", str(free_port()),
        env=CLEAN_ENV, cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"GATEWAY_API_KEYS" in err and b"GATEWAY_ALLOW_OPEN" in err


@pytest.mark.parametrize("toml, needle", [
    ("[providers.local]\ntype = \"openai\"\nbase_url = \"http://x\"\nbogus = 1\n", ":4: unknown key 'bogus'"),
    ("[nonsense]\n", ":1: unknown key 'nonsense'"),
])
async def test_config_unknown_key_names_the_line(tmp_path, toml, needle):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(toml)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_gateway", "--config", str(cfg), "--port", str(free_port()),
        env=CLEAN_ENV, cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert needle in err.decode()


async def test_workers_share_the_port_and_stop_together(tmp_path):
    port = free_port()
    proc, _ = await start(["--port", str(port), "--workers", "2"], {"LEDGER_PATH": "off"}, tmp_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
        async with aiohttp.ClientSession() as s:
            for _ in range(200):  # both workers accept on the shared port
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)
    # no worker outlives the parent: the port is free again
    for _ in range(100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                await asyncio.sleep(0.05)
    else:
        raise AssertionError("a worker kept the port after the parent stopped")


async def test_a_dead_worker_is_replaced_and_a_taken_port_is_a_clear_error(tmp_path):
    from llm_gateway.cli import RESTART_MIN_UPTIME

    port = free_port()
    proc, _ = await start(["--port", str(port), "--workers", "2"], {"LEDGER_PATH": "off"}, tmp_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
        # a second gateway on the same port fails at once instead of sharing the traffic
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llm_gateway", "--port", str(port), "--workers", "2", env=CLEAN_ENV,
            cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(other.communicate(), 20)
        assert other.returncode == 1 and b"cannot listen on" in err and b"in use" in err
        await asyncio.sleep(RESTART_MIN_UPTIME + 0.5)  # past the crash-loop guard
        children = [int(p) for p in (Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())]
        workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(workers[0], 9)
        for _ in range(200):  # replaced
            now = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
            if len([c for c in now if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
                    and c != workers[0]]) == 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the killed worker was not replaced")
        async with aiohttp.ClientSession() as s:
            for _ in range(50):
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert f"worker {workers[0]} exited".encode() in err


async def test_a_second_signal_during_the_drain_stops_at_once_and_says_what_is_lost(tmp_path, fake_openai):
    """SIGTERM drains (SHUTDOWN_TIMEOUT); a second one, a second later, stops at once, with
    a line counting the spend-ledger rows that will not be written. A duplicate within a
    second of the first (a terminal's Ctrl-C reaching every process) is ignored."""
    import signal

    from tests.fakes.base import Fault

    hold = asyncio.Event()
    fake_openai.inject(Fault(hold_after=2, hold=hold))  # a stream that stays open
    port = free_port()
    proc, _ = await start(["--port", str(port)], {
        "OPENAI_API_KEY": fake_openai.api_key, "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "SHUTDOWN_TIMEOUT": "60", "LEDGER_PATH": str(tmp_path / "l.sqlite3")}, tmp_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True})
            await r.content.readuntil(b"\n\n")  # the stream is under way
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)  # the same stop, delivered twice: still draining
            await asyncio.sleep(1.3)
            assert proc.returncode is None
            proc.send_signal(signal.SIGTERM)  # a second stop: at once
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            r.close()
    finally:
        hold.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    lines = [orjson.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    states = [x.get("state") for x in lines if x.get("event") == "shutdown"]
    assert states == ["draining", "forced"]
