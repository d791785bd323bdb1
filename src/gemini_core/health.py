"""Health: what each dependency says about itself, and what that means overall."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from gemini_core.ports import (
    Cache,
    CacheStats,
    DatabaseProbe,
    DatabaseStatus,
    RateLimiter,
    RateLimiterStats,
)

log = logging.getLogger(__name__)


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: HealthStatus
    database: DatabaseStatus
    rate_limiting: RateLimiterStats | None
    """``None`` when the limiter could not say (it then fails open)."""
    cache: CacheStats | None


class HealthService:
    """The database is essential: without it the service is unhealthy. The
    limiter and the cache are not: without them it is degraded."""

    def __init__(self, *, database: DatabaseProbe, rate_limiter: RateLimiter, cache: Cache) -> None:
        self._database = database
        self._rate_limiter = rate_limiter
        self._cache = cache

    async def check_database(self) -> DatabaseStatus:
        return await self._database.check()

    async def check(self) -> HealthReport:
        database = await self._database.check()
        limiter_stats: RateLimiterStats | None
        cache_stats: CacheStats | None
        try:
            limiter_stats = await self._rate_limiter.stats()
        except Exception as exc:  # a broken limiter must not break the health check
            # One line, no traceback: load balancers ask every few seconds.
            log.warning("rate limiter statistics unavailable: %r", exc)
            limiter_stats = None
        try:
            cache_stats = await self._cache.stats()
        except Exception as exc:
            log.warning("cache statistics unavailable: %r", exc)
            cache_stats = None
        if not database.healthy:
            status = HealthStatus.UNHEALTHY
        elif limiter_stats is None or cache_stats is None:
            status = HealthStatus.DEGRADED
        else:
            status = HealthStatus.HEALTHY
        return HealthReport(
            status=status, database=database, rate_limiting=limiter_stats, cache=cache_stats
        )
