"""Token buckets in Redis: one Lua script per admission, shared by every process.

The script is the same algorithm as ``MemoryStore.apply_now``: read every bucket of
the request, refill it by the time elapsed, check every step, then charge all of them
or none. Redis runs a script atomically, so concurrent admissions from any number of
``--workers`` processes and replicas see one consistent count (no read-modify-write
race). Time comes from the Redis server (``TIME``), so replicas with skewed clocks
still agree. Each bucket is a hash ``{l: level, t: time}`` that expires once it
would be full again (a full bucket and a missing one are the same).

Failures (connection refused, timeout, any Redis error) raise ``StoreUnavailable``;
the limiter decides whether that fails open or closed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .store import Outcome, Step


class StoreUnavailable(Exception):
    """The shared store could not be asked (the message never holds a secret)."""


LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local levels = {}
for i = 1, n do
  local b = (i - 1) * 4
  local cap = tonumber(ARGV[b + 1])
  local rate = tonumber(ARGV[b + 2])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = cap
  if v[1] then
    level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
  end
  levels[i] = level
end
for i = 1, n do
  local b = (i - 1) * 4
  local need = tonumber(ARGV[b + 3])
  if levels[i] < need then
    local out = {tostring(i), string.format('%.6f', (need - levels[i]) / tonumber(ARGV[b + 2]))}
    for j = 1, n do out[#out + 1] = string.format('%.6f', levels[j]) end
    return out
  end
end
local out = {'0', '0'}
for i = 1, n do
  local b = (i - 1) * 4
  local cap = tonumber(ARGV[b + 1])
  local rate = tonumber(ARGV[b + 2])
  local level = math.min(cap, levels[i] - tonumber(ARGV[b + 4]))
  redis.call('HSET', KEYS[i], 'l', string.format('%.6f', level), 't', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) / rate * 1000) + 1000)
  out[#out + 1] = string.format('%.6f', level)
end
return out
"""


class RedisStore:
    name = "redis"

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        # Imported here so a memory-only gateway never loads the client.
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No client-side retries: during an outage every admission would otherwise
        # wait through several reconnects; the limiter's own back-off handles it.
        self.client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                     retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.script = self.client.register_script(LUA)

    async def apply(self, steps: Sequence[Step]) -> Outcome:
        from redis.exceptions import RedisError

        keys = [s.bucket.key for s in steps]
        args: list[str] = []
        for s in steps:
            args += [str(s.bucket.capacity), repr(s.bucket.rate), repr(float(s.need)), repr(float(s.take))]
        try:
            res = await self.script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as e:
            raise StoreUnavailable(type(e).__name__) from None
        idx = int(res[0])
        levels = tuple(float(x) for x in res[2:])
        if idx:
            return Outcome(idx - 1, float(res[1]), levels)
        return Outcome(None, 0.0, levels)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # pragma: no cover - closing a dead connection
            pass
