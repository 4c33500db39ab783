"""Where entries live: aiocache's memory cache (default) or Redis (``CACHE_BACKEND=redis``).

Both store opaque bytes (the entry as JSON, written by ``cache/__init__.py``) under
the key with the TTL; the entry also carries its own ``expires_at`` so expiry follows
the injected clock in tests (aiocache's memory TTL is a real ``loop.call_later``).

Redis may go away. A failed operation marks the backend *down* (one warning line),
and for ``RETRY_AFTER_S`` (on the injected clock) no operation is tried: the gateway
serves without the cache, at full speed. After that window the next operation probes
Redis again; success marks it *up* (one info line). So the log holds one line per
state change, never one per request.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiocache import RedisCache, SimpleMemoryCache
from aiocache.serializers import BaseSerializer

from ..logging import event
from ..settings import ConfigError

# aiocache 0.12 calls redis-py APIs that redis 5+/8.x marks deprecated (``setex`` for an
# int TTL, ``close()``), and redis warns on *every* call. We avoid both calls (the TTL is
# passed as a float, so aiocache uses PSETEX; we close with ``aclose()``), and filter the
# two messages here, narrowly, in case another aiocache path reaches them. pytest
# re-installs its own filters per test, so pyproject.toml's ``filterwarnings`` repeats them.
warnings.filterwarnings("ignore", message=r"Call to deprecated (setex|close)\.", category=DeprecationWarning,
                        module=r"aiocache\.backends\.redis")

#: seconds (on the injected clock) the cache stays off after Redis failed
RETRY_AFTER_S = 5.0
#: seconds for one Redis operation (connect included); a slow cache must not slow requests
REDIS_TIMEOUT_S = 1.0


class _Bytes(BaseSerializer):
    """Values are already bytes; Redis must hand them back undecoded."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> Any:
        return value

    def loads(self, value: Any) -> Any:
        return value


class Backend:
    """get/set of bytes with a TTL. Errors propagate; ``ResponseCache`` decides."""

    name = "memory"

    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    @property
    def available(self) -> bool:
        return True


class MemoryBackend(Backend):
    """aiocache ``SimpleMemoryCache``, bounded: past ``max_entries`` the oldest entry goes."""

    name = "memory"

    def __init__(self, max_entries: int) -> None:
        # timeout=None: a dict lookup needs no asyncio.wait_for (a task per call on 3.11)
        self._cache = SimpleMemoryCache(serializer=_Bytes(), timeout=None)
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._cache._cache)

    async def get(self, key: str) -> bytes | None:
        return await self._cache.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        store = self._cache._cache  # aiocache keeps insertion order: the first key is the oldest
        while self.max_entries and len(store) >= self.max_entries and key not in store:
            await self._cache.delete(next(iter(store)))
        await self._cache.set(key, value, ttl=float(ttl))

    async def delete(self, key: str) -> None:
        await self._cache.delete(key)

    async def close(self) -> None:
        await self._cache.clear()


def redis_params(url: str) -> dict[str, Any]:
    """REDIS_URL → aiocache RedisCache arguments. Messages never echo the password."""
    u = urlsplit(url)
    if u.scheme not in ("redis", "rediss"):
        raise ConfigError("REDIS_URL must start with redis:// or rediss:// (unix sockets are not supported)")
    db = 0
    path = (u.path or "").strip("/")
    q = parse_qs(u.query)
    raw_db = path or (q.get("db") or ["0"])[0]
    try:
        db = int(raw_db)
        port = u.port or 6379
    except ValueError:
        raise ConfigError("REDIS_URL: the database number and port must be whole numbers") from None
    pool: dict[str, Any] = {}
    if u.username:
        pool["username"] = unquote(u.username)
    return {
        "endpoint": u.hostname or "127.0.0.1", "port": port, "db": db,
        "password": unquote(u.password) if u.password else None,
        "ssl": u.scheme == "rediss", "connection_pool_kwargs": pool,
    }


def redis_where(url: str) -> str:
    """host:port/db for log lines (no credentials)."""
    p = redis_params(url)
    return f"{p['endpoint']}:{p['port']}/{p['db']}"


class RedisBackend(Backend):
    """aiocache ``RedisCache``; a down/up state with a back-off window on the given clock."""

    name = "redis"

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic,
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.where = redis_where(url)
        self._cache = RedisCache(serializer=_Bytes(), timeout=REDIS_TIMEOUT_S,
                                 create_connection_timeout=REDIS_TIMEOUT_S, **redis_params(url))
        self.clock = clock
        self.on_state = on_state
        self.up = True
        self.retry_at = 0.0

    @property
    def available(self) -> bool:
        """False while inside the back-off window after a failure."""
        return self.up or self.clock() >= self.retry_at

    def _failed(self, e: BaseException) -> None:
        self.retry_at = self.clock() + RETRY_AFTER_S
        if self.up:
            self.up = False
            event(logging.WARNING, "cache backend unavailable; serving without the cache",
                  event="cache_backend", backend="redis", state="down", where=self.where,
                  error_type=type(e).__name__, detail=str(e)[:200],
                  retry_in_s=RETRY_AFTER_S)
            if self.on_state:
                self.on_state(False)

    def _ok(self) -> None:
        if not self.up:
            self.up = True
            event(logging.INFO, "cache backend recovered", event="cache_backend", backend="redis",
                  state="up", where=self.where)
            if self.on_state:
                self.on_state(True)

    async def _call(self, op: str, *args: Any, **kw: Any) -> Any:
        if not self.available:
            return None
        try:
            out = await getattr(self._cache, op)(*args, **kw)
        except Exception as e:  # redis errors, timeouts, connection refused (never CancelledError)
            self._failed(e)
            return None
        self._ok()
        return out

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        # A float TTL makes aiocache use PSETEX (ms precision; SETEX is deprecated in redis-py).
        await self._call("set", key, value, ttl=float(ttl))

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def close(self) -> None:
        try:
            await self._cache.client.aclose()
        except Exception:  # closing a pool to a dead server must not break shutdown
            pass
