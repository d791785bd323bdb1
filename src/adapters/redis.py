"""Rate limiting and a cache in Redis, shared by every worker and every host.

``RedisConnection`` is the one client of a process; ``RedisRateLimiter`` and
``RedisCache`` keep their keys under its namespace. The namespace is wrapped in
a Redis Cluster hash tag (``{...}``), so every key one script touches lives in
one slot.

Each rate-limit decision is one Lua script, atomic in Redis, so any number of
workers and hosts share one budget exactly. Windows are timed by the Redis
server's clock (``TIME``), never the hosts'. Besides the per-key counts the
script keeps a running total, so ``stats()`` costs nothing like a key scan.

Redis errors become ``UnavailableError`` at this boundary: the web layer fails
open on a failed decision, and ``HealthService`` reports degraded when
``stats()`` fails. After a failed decision the limiter stops asking Redis for a
moment, so an unreachable Redis costs each request nothing but the check.
"""

from __future__ import annotations

import math
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gemini_core.errors import UnavailableError
from gemini_core.ports import CacheStats, RateLimitDecision, RateLimiterStats

__all__ = ["RedisCache", "RedisConnection", "RedisRateLimiter"]

REDIS_ERRORS = (RedisError, OSError, TimeoutError)
UNAVAILABLE = "Redis is unavailable."

# The current time in milliseconds, by the Redis server's clock.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: ends (zset member -> window end, ms), counts (zset member -> requests), total.
_FORGET = """
local function forget(member)
  local count = redis.call('ZSCORE', KEYS[2], member)
  if count then redis.call('DECRBY', KEYS[3], count) end
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
"""

# ARGV: member, limit, window (ms). Returns {allowed, count, ms until the window ends}.
# A refused request is not counted, as in the in-memory limiter.
_HIT = (
    _NOW
    + _FORGET
    + """
for _, ended in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 8)) do
  forget(ended)
end
local member, limit = ARGV[1], tonumber(ARGV[2])
local ends = tonumber(redis.call('ZSCORE', KEYS[1], member))
if ends and ends <= now then
  forget(member)
  ends = nil
end
local count = 0
if ends then
  count = tonumber(redis.call('ZSCORE', KEYS[2], member)) or 0
else
  ends = now + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], ends, member)
end
local allowed = count < limit
if allowed then
  redis.call('ZINCRBY', KEYS[2], 1, member)
  redis.call('INCR', KEYS[3])
  count = count + 1
end
-- The three keys outlive every window they hold, and then vanish together.
local keep = math.max(redis.call('PTTL', KEYS[1]), ends - now)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep) end
return {allowed and 1 or 0, count, ends - now}
"""
)

_LIMITER_STATS = (
    _NOW
    + _FORGET
    + """
for _, ended in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  forget(ended)
end
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""
)

# KEYS: value, index (zset key -> expiry, ms). ARGV: key, value, ttl (ms).
_CACHE_SET = (
    _NOW
    + """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.max(redis.call('PTTL', KEYS[2]), tonumber(ARGV[3])))
"""
)

# KEYS: index. Values expire in Redis itself; the index remembers them until
# the next write, which is what "expired" counts.
_CACHE_STATS = (
    _NOW
    + """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', now)}
"""
)


class RedisConnection:
    """One process's Redis client, with short timeouts and no retry loop: a
    rate-limit decision is on every request's path and must never hang on Redis.

    ``namespace`` separates deployments that share a Redis.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        timeout_seconds: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # One immediate retry replaces a pooled connection that Redis closed.
            retry=Retry(NoBackoff(), 1),
        )
        self.client: Redis = Redis(connection_pool=pool)
        self.namespace = "{" + namespace + "}"

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


class RedisRateLimiter:
    """The ``RateLimiter`` port in Redis: fixed windows that start at a key's
    first request, exactly like ``InMemoryRateLimiter``, but shared."""

    def __init__(self, connection: RedisConnection, *, backoff_seconds: float = 1.0) -> None:
        ns = connection.namespace
        self._keys = [f"{ns}:rl:ends", f"{ns}:rl:counts", f"{ns}:rl:total"]
        self._hit = connection.client.register_script(_HIT)
        self._stats = connection.client.register_script(_LIMITER_STATS)
        self._backoff_seconds = backoff_seconds
        self._resume_at = 0.0

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        if self._resume_at and time.monotonic() < self._resume_at:
            raise UnavailableError(UNAVAILABLE)
        try:
            reply: Any = await self._hit(keys=self._keys, args=[key, limit, window_seconds * 1000])
        except REDIS_ERRORS as exc:
            self._resume_at = time.monotonic() + self._backoff_seconds
            raise UnavailableError(UNAVAILABLE) from exc
        self._resume_at = 0.0
        allowed, count, left_ms = (int(part) for part in reply)
        reset_after = max(1, math.ceil(left_ms / 1000))
        return RateLimitDecision(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, limit - count),
            reset_after=reset_after,
            retry_after=0 if allowed else reset_after,
        )

    async def stats(self) -> RateLimiterStats:
        try:
            identifiers, requests = await self._stats(keys=self._keys)
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc
        return RateLimiterStats(total_identifiers=int(identifiers), total_requests=int(requests))


class RedisCache:
    """The ``Cache`` port in Redis. Values expire in Redis; an index of keys
    by expiry answers ``stats()`` without scanning the key space."""

    def __init__(self, connection: RedisConnection) -> None:
        self._client = connection.client
        self._values = f"{connection.namespace}:cache:value:"
        self._index = f"{connection.namespace}:cache:index"
        self._set = connection.client.register_script(_CACHE_SET)
        self._stats = connection.client.register_script(_CACHE_STATS)

    async def get(self, key: str) -> bytes | None:
        try:
            value: Any = await self._client.get(self._values + key)
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        try:
            await self._set(keys=[self._values + key, self._index], args=[key, value, ttl_ms])
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc

    async def delete(self, key: str) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._values + key)
                pipe.zrem(self._index, key)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc

    async def stats(self) -> CacheStats:
        try:
            total, expired = await self._stats(keys=[self._index])
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc
        return CacheStats(total_keys=int(total), expired_keys=int(expired))
