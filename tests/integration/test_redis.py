"""Rate limits and the cache in a real Redis: one budget shared exactly by
several clients, workers and server processes; failing open, and reporting
degraded, while Redis is away; recovering when it is back.

Runs only when ``REDIS_URL`` is set (``.ci/run`` sets it). Every test keeps its
keys under a namespace of its own and removes them at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from adapters.clock import SystemClock
from adapters.memory import InMemoryCache, InMemoryRateLimiter
from adapters.redis import RedisCache, RedisConnection, RedisRateLimiter
from gemini_core.errors import UnavailableError
from gemini_core.ports import Cache, RateLimiter
from web.app import create_app

from .proxy import TcpProxy
from .server import running_server, settings_for, until

REDIS_URL = os.environ.get("REDIS_URL", "")
AT_ONCE = 5.0  # a deadline far above the client's 0.5 s timeouts: reached only if it waits
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL")


def redis_url_via(proxy: TcpProxy) -> str:
    database = urlsplit(REDIS_URL).path or "/0"
    return f"redis://127.0.0.1:{proxy.port}{database}"


@pytest.fixture
async def namespaces() -> AsyncIterator[Callable[[str], str]]:
    """Hands out namespaces, and deletes their keys when the test ends."""
    used: list[str] = []

    def namespace(name: str) -> str:
        used.append(name)
        return name

    yield namespace
    client = Redis.from_url(REDIS_URL)
    try:
        for name in used:
            keys = [key async for key in client.scan_iter(match=f"{{{name}}}*")]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def connection(namespaces: Callable[[str], str]) -> AsyncIterator[RedisConnection]:
    connection = RedisConnection(REDIS_URL, namespace=namespaces(f"test:{uuid.uuid4().hex}"))
    yield connection
    await connection.close()


def app_namespace(database_url: str) -> str:
    """The namespace the composition root gives a deployment on this database."""
    return f"gemini:{urlsplit(database_url).path.lstrip('/')}"


# --- the same contract in memory and in Redis --------------------------------------


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, connection: RedisConnection) -> RateLimiter:
    if request.param == "memory":
        return InMemoryRateLimiter(clock=SystemClock())
    return RedisRateLimiter(connection)


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest, connection: RedisConnection) -> Cache:
    if request.param == "memory":
        return InMemoryCache(clock=SystemClock())
    return RedisCache(connection)


async def test_a_limit_admits_exactly_its_number_then_says_how_long_to_wait(
    limiter: RateLimiter,
) -> None:
    decisions = [await limiter.hit("ip:1", limit=3, window_seconds=60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert [d.retry_after for d in decisions[:3]] == [0, 0, 0]
    assert all(59 <= d.retry_after <= 60 for d in decisions[3:])
    assert all(59 <= d.reset_after <= 60 for d in decisions)
    assert (await limiter.hit("ip:2", limit=3, window_seconds=60)).allowed
    stats = await limiter.stats()
    assert (stats.total_identifiers, stats.total_requests) == (2, 4)


async def test_a_window_ends_and_its_key_is_forgotten(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", limit=1, window_seconds=1)).allowed
    assert not (await limiter.hit("k", limit=1, window_seconds=1)).allowed
    await asyncio.sleep(1.1)
    assert (await limiter.stats()).total_identifiers == 0
    assert (await limiter.hit("k", limit=1, window_seconds=1)).allowed


async def test_a_cache_value_lives_for_its_ttl(cache: Cache) -> None:
    await cache.set("k", b"v", ttl_seconds=60)
    await cache.set("short", b"w", ttl_seconds=0.2)
    assert await cache.get("k") == b"v"
    assert await cache.get("short") == b"w"
    assert (await cache.stats()).total_keys == 2
    await asyncio.sleep(0.3)
    assert await cache.get("short") is None
    await cache.delete("k")
    assert await cache.get("k") is None
    assert await cache.get("never") is None


# --- Redis only -----------------------------------------------------------------------


async def test_many_connections_share_one_budget_exactly(
    namespaces: Callable[[str], str],
) -> None:
    namespace = namespaces(f"test:{uuid.uuid4().hex}")
    connections = [RedisConnection(REDIS_URL, namespace=namespace) for _ in range(4)]
    limiters = [RedisRateLimiter(c) for c in connections]
    try:
        decisions = await asyncio.gather(
            *(limiters[i % 4].hit("ip:1", limit=10, window_seconds=60) for i in range(100))
        )
        assert sum(d.allowed for d in decisions) == 10
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
        stats = await limiters[0].stats()
        assert (stats.total_identifiers, stats.total_requests) == (1, 10)
    finally:
        for connection in connections:
            await connection.close()


async def test_the_limiters_keys_expire_with_their_last_window(
    connection: RedisConnection,
) -> None:
    limiter = RedisRateLimiter(connection)
    await limiter.hit("k", limit=5, window_seconds=60)
    keys = [key async for key in connection.client.scan_iter(match=f"{connection.namespace}*")]
    assert len(keys) == 3
    for key in keys:
        assert 0 < await connection.client.pttl(key) <= 60_000


async def test_the_cache_statistics_count_expired_keys_until_the_next_write(
    connection: RedisConnection,
) -> None:
    cache = RedisCache(connection)
    await cache.set("a", b"1", ttl_seconds=0.1)
    await cache.set("b", b"2", ttl_seconds=60)
    await asyncio.sleep(0.2)
    stats = await cache.stats()
    assert (stats.total_keys, stats.expired_keys) == (2, 1)
    await cache.set("c", b"3", ttl_seconds=60)
    stats = await cache.stats()
    assert (stats.total_keys, stats.expired_keys) == (2, 0)


async def test_unreachable_redis_is_an_unavailable_error_quickly_and_then_recovers(
    namespaces: Callable[[str], str],
) -> None:
    upstream = urlsplit(REDIS_URL)
    proxy = TcpProxy.to(upstream.hostname or "127.0.0.1", upstream.port or 6379)
    proxy.start()
    connection = RedisConnection(redis_url_via(proxy), namespace=namespaces(uuid.uuid4().hex))
    limiter, cache = RedisRateLimiter(connection, backoff_seconds=0.5), RedisCache(connection)
    try:
        assert (await limiter.hit("k", limit=5, window_seconds=60)).allowed
        proxy.stop()
        for call in (
            lambda: limiter.hit("k", limit=5, window_seconds=60),
            limiter.stats,
            lambda: cache.get("k"),
            cache.stats,
        ):
            async with asyncio.timeout(AT_ONCE):  # refused, not waited on
                with pytest.raises(UnavailableError):
                    await call()
        proxy.start()
        await asyncio.sleep(0.6)  # the limiter's back-off after a failure
        decision = await limiter.hit("k", limit=5, window_seconds=60)
        assert (decision.allowed, decision.remaining) == (True, 3)
        assert (await limiter.stats()).total_requests == 2
    finally:
        await connection.close()
        proxy.shutdown()


# --- the service on Redis --------------------------------------------------------------


async def test_health_reports_redis_statistics_and_degraded_while_redis_is_away(
    database_url: str, tmp_path: Path, namespaces: Callable[[str], str]
) -> None:
    namespaces(app_namespace(database_url))
    upstream = urlsplit(REDIS_URL)
    proxy = TcpProxy.to(upstream.hostname or "127.0.0.1", upstream.port or 6379)
    proxy.start()
    settings = settings_for(
        tmp_path, database_url, REDIS_URL=redis_url_via(proxy), RATE_LIMIT_REQUESTS="5"
    )
    try:
        app = create_app(settings=settings)
        async with AsyncTestClient(app, timeout=30) as client:
            for _ in range(3):
                assert (await client.get("/auth/me")).headers["ratelimit-limit"] == "5"
            health = (await client.get("/health")).json()
            assert health["status"] == "healthy"
            assert health["services"]["rate_limiting"] == {
                "status": "healthy",
                "stats": {"total_identifiers": 1, "total_requests": 3},
            }
            assert health["services"]["cache"]["status"] == "healthy"

            proxy.stop()
            for _ in range(10):  # past the limit of 5: nothing is counted now
                async with asyncio.timeout(AT_ONCE):
                    response = await client.get("/auth/me")
                assert response.status_code == 401
                assert "ratelimit-limit" not in response.headers
            # /health may answer from its report of up to a second ago, then looks again.
            deadline = time.monotonic() + 15
            while (down := await client.get("/health")).json()["status"] == "healthy":
                assert time.monotonic() < deadline, "/health did not see the outage"
                await asyncio.sleep(0.1)
            assert down.status_code == 200
            body = down.json()
            assert body["status"] == "degraded"
            assert body["services"]["rate_limiting"] == {"status": "unhealthy", "stats": None}
            assert body["services"]["cache"] == {"status": "unhealthy", "stats": None}

            proxy.start()
            deadline = time.monotonic() + 15
            while (await client.get("/health")).json()["status"] != "healthy":
                assert time.monotonic() < deadline, "the service did not recover"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.1)  # the limiter's back-off after a failure
            statuses = [(await client.get("/auth/me")).status_code for _ in range(3)]
            assert statuses == [401, 401, 429]  # the budget counted before the outage holds
    finally:
        proxy.shutdown()


async def _hammer(bases: list[str], path: str, count: int, **headers: str) -> list[int]:
    async def one(client: httpx.AsyncClient, base: str) -> int:
        return (await client.get(f"{base}{path}", headers=headers)).status_code

    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        calls: list[Awaitable[int]] = [one(client, bases[i % len(bases)]) for i in range(count)]
        return list(await asyncio.gather(*calls))


def test_two_server_processes_share_one_budget_exactly(
    database_url: str, tmp_path: Path, namespaces: Callable[[str], str]
) -> None:
    namespaces(app_namespace(database_url))
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT_REQUESTS": "10",
        "RATE_LIMIT_WINDOW_SECONDS": "300",
        "WORKERS": "2",
    }
    with (
        running_server(tmp_path, **env) as (first, first_base),
        running_server(tmp_path, **env) as (second, second_base),
    ):
        bases = [first_base, second_base]
        statuses = asyncio.run(_hammer(bases, "/auth/me", 100))
        assert statuses.count(401) == 10
        assert statuses.count(429) == 90
        # A client that makes up X-Forwarded-For addresses is still one client.
        forged = asyncio.run(_hammer(bases, "/auth/me", 10, **{"X-Forwarded-For": "192.0.2.1"}))
        assert forged == [429] * 10
        # /health may answer from its report of up to a second ago, then looks again.
        stats = until(
            lambda: httpx.get(f"{second_base}/health").json()["services"]["rate_limiting"],
            lambda limiting: limiting["stats"]["total_requests"] > 0,
        )["stats"]
        assert stats == {"total_identifiers": 1, "total_requests": 10}
        for process in (first, second):
            process.terminate()
            assert process.wait(timeout=60) == 0
