"""Shared fixtures: fake vendors on loopback and a gateway started on a free port.

``gateway(env=..., config=...)`` starts the real app (``create_app``) with an
injected sleep (records the delay, returns at once), a fixed jitter draw and a
captured JSON log, and gives back a handle with an aiohttp client and an
``openai.AsyncOpenAI`` pointed at it.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from llm_gateway.app import create_app
from llm_gateway.logging import setup_logging
from llm_gateway.settings import load_settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.mistral import FakeMistral
from tests.fakes.openai import FakeOpenAI


@dataclass
class Gateway:
    server: TestServer
    http: aiohttp.ClientSession
    logbuf: io.StringIO
    sleeps: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [1000.0])
    clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def app(self) -> Any:
        return self.server.app

    def sdk(self, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("api_key", "client-key-not-a-vendor-key")
        kw.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", **kw)
        self.clients.append(client)  # closed at teardown, inside the test's event loop
        return client

    def log_text(self) -> str:
        for h in logging.getLogger().handlers:  # lines written in the loop are batched per iteration
            h.flush()
        return self.logbuf.getvalue()

    def logs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.logs() if r.get("event") == name]

    def advance(self, seconds: float) -> None:
        self.clock[0] += seconds


async def _start_fake(cls: type) -> Any:
    f = cls()
    await f.start()
    return f


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    f = await _start_fake(FakeOpenAI)
    yield f
    await f.stop()


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    f = await _start_fake(FakeAnthropic)
    yield f
    await f.stop()


@pytest.fixture
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    f = await _start_fake(FakeGemini)
    yield f
    await f.stop()


@pytest.fixture
async def fake_mistral() -> AsyncIterator[FakeMistral]:
    f = await _start_fake(FakeMistral)
    yield f
    await f.stop()


@pytest.fixture
def vendor_env(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini,
               fake_mistral: FakeMistral) -> dict[str, str]:
    """Environment pointing every vendor at its fake, with the fakes' keys."""
    return {
        "OPENAI_API_KEY": fake_openai.api_key,
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "CLAUDE_API_KEY": fake_anthropic.api_key,
        "CLAUDE_BASE_URL": fake_anthropic.url,
        "GEMINI_API_KEY": fake_gemini.api_key,
        "GEMINI_BASE_URL": fake_gemini.url,
        "MISTRAL_API_KEY": fake_mistral.api_key,
        "MISTRAL_BASE_URL": fake_mistral.url,
    }


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def make(env: dict[str, str] | None = None, config: str | None = None,
                   rand: float = 0.5) -> Gateway:
        environ = {"LOG_LEVEL": "debug", "INITIAL_BACKOFF": "100", "MAX_BACKOFF": "2000",
                   # the spend ledger's SQLite file goes to the test's tmp dir, never the repo
                   "LEDGER_PATH": str(tmp_path / f"ledger{len(started)}.sqlite3")}
        environ.update(env or {})
        if config is not None:
            p = tmp_path / f"config{len(started)}.toml"
            p.write_text(config)
            environ["GATEWAY_CONFIG"] = str(p)
        settings = load_settings({}, environ)
        buf = io.StringIO()
        setup_logging(settings.log_level, settings.secrets(), stream=buf)
        sleeps: list[float] = []
        clock = [1000.0]

        async def fake_sleep(delay: float) -> None:
            sleeps.append(delay)
            clock[0] += delay
            await asyncio.sleep(0)

        app = create_app(settings, sleep=fake_sleep, rand=lambda: rand, clock=lambda: clock[0])
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        gw = Gateway(server, aiohttp.ClientSession(), buf, sleeps, clock)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        for client in gw.clients:
            await client.close()
        await gw.http.close()
        await gw.server.close()
