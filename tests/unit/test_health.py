"""Health over in-memory adapters: what an unhealthy answer carries, and how
often a failing dependency is logged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from adapters.clock import SystemClock
from adapters.memory import InMemoryCache, InMemoryDatabaseProbe
from gemini_core.health import HealthService, HealthStatus
from gemini_core.ports import CacheStats, RateLimitDecision, RateLimiterStats
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
