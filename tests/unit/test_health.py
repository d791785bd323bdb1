"""Health over in-memory adapters: what an unhealthy answer carries, and how
often a failing dependency is logged."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from adapters.clock import SystemClock
from adapters.memory import FakeClock, InMemoryCache, InMemoryDatabaseProbe, InMemoryRateLimiter
from gemini_core.health import HealthService, HealthStatus
from gemini_core.ports import CacheStats, DatabaseStatus, RateLimitDecision, RateLimiterStats
from web.app import create_app
from web.composition import memory_container
from web.settings import load_settings


class RedisDown:
    """A limiter and a cache whose shared server is unreachable."""

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        raise ConnectionError("Redis is down")

    async def stats(self) -> RateLimiterStats:
        raise ConnectionError("Redis is down")


class CacheDown(InMemoryCache):
    async def stats(self) -> CacheStats:
        raise ConnectionError("Redis is down")


async def test_an_unhealthy_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None
    )
    container = memory_container(settings)
    database = InMemoryDatabaseProbe(healthy=False)
    health = HealthService(
        database=database,
        rate_limiter=container.rate_limiter,
        cache=InMemoryCache(clock=SystemClock()),
        clock=SystemClock(),
    )
    app = create_app(dataclasses.replace(container, health=health))
    async with AsyncTestClient(app) as client:
        for path in ("/health", "/health/database"):
            response = await client.get(path)
            assert response.status_code == 503
            assert response.json()["status"] == "unhealthy"
            assert int(response.headers["retry-after"]) > 0


async def test_a_redis_outage_is_logged_once_not_on_every_health_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = HealthService(
        database=InMemoryDatabaseProbe(),
        rate_limiter=RedisDown(),
        cache=CacheDown(clock=SystemClock()),
        clock=SystemClock(),
        reuse_seconds=0,
    )
    for _ in range(5):
        report = await health.check()
        assert report.status == HealthStatus.DEGRADED
        assert report.rate_limiting is None
        assert report.cache is None
    warnings = [r for r in caplog.records if r.name == "gemini_core.health"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "rate limiter" in message
    assert "cache" in message


class CountingProbe(InMemoryDatabaseProbe):
    """A database probe that counts its checks and, when told, holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.gate: asyncio.Event | None = None

    async def check(self) -> DatabaseStatus:
        self.checks += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().check()


async def test_a_report_younger_than_a_second_answers_again() -> None:
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    probe = CountingProbe()
    health = HealthService(
        database=probe,
        rate_limiter=InMemoryRateLimiter(clock=clock),
        cache=InMemoryCache(clock=clock),
        clock=clock,
    )
    first = await health.check()
    clock.advance(seconds=0.9)
    assert await health.check() is first
    assert probe.checks == 1
    clock.advance(seconds=0.1)
    assert await health.check() is not first
    assert probe.checks == 2
    await health.check_database()  # always afresh
    assert probe.checks == 3


async def test_callers_during_a_check_share_it_and_one_leaving_stops_nobody() -> None:
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    probe = CountingProbe()
    probe.gate = asyncio.Event()
    health = HealthService(
        database=probe,
        rate_limiter=InMemoryRateLimiter(clock=clock),
        cache=InMemoryCache(clock=clock),
        clock=clock,
    )
    loop = asyncio.get_running_loop()
    callers = [loop.create_task(health.check()) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    callers[0].cancel()
    probe.gate.set()
    reports = await asyncio.gather(*callers[1:])
    assert reports[0] is reports[1]
    assert reports[0].status is HealthStatus.HEALTHY
    assert probe.checks == 1
    assert callers[0].cancelled()
