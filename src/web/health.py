"""``GET /health`` and ``GET /health/database``, in the original guide's shape."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from gemini_core.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from gemini_core.health import HealthStatus
from gemini_core.ports import DatabaseStatus
from web.container import Container

T = TypeVar("T")


class DatabaseHealth(msgspec.Struct):
    status: str
    response_time_ms: float


class RateLimitStats(msgspec.Struct):
    total_identifiers: int
    total_requests: int


class RateLimitHealth(msgspec.Struct):
    status: str
    stats: RateLimitStats | None


class CacheStats(msgspec.Struct):
    total_keys: int
    expired_keys: int


class CacheHealth(msgspec.Struct):
    status: str
    stats: CacheStats | None


class Services(msgspec.Struct):
    database: DatabaseHealth
    rate_limiting: RateLimitHealth
    cache: CacheHealth


class Health(msgspec.Struct):
    status: str
    timestamp: datetime
    version: str
    environment: str
    services: Services


class DatabaseDetail(msgspec.Struct):
    status: str
    response_time_ms: float
    pool: dict[str, int]


def _word(ok: bool) -> str:
    return HealthStatus.HEALTHY if ok else HealthStatus.UNHEALTHY


def _database(status: DatabaseStatus) -> DatabaseHealth:
    return DatabaseHealth(status=_word(status.healthy), response_time_ms=status.response_time_ms)


def _respond(body: T, *, healthy: bool) -> Response[T]:
    """200, or a 503 that says when to look again, as every other 503 does."""
    if healthy:
        return Response(body, status_code=HTTP_200_OK)
    retry_after = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
    return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE, headers=retry_after)


class HealthController(Controller):
    path = "/health"
    tags = ["operations"]  # noqa: RUF012  (Litestar reads class attributes)

    @get(
        "/",
        operation_id="health",
        summary="Service health",
        responses={
            HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
                Health, description="Unhealthy: the database is down; see `Retry-After`."
            )
        },
    )
    async def health(self, container: NamedDependency[Container]) -> Response[Health]:
        report = await container.health.check()
        limiter, cache = report.rate_limiting, report.cache
        body = Health(
            status=report.status,
            timestamp=container.clock.now(),
            version=container.version,
            environment=container.settings.environment,
            services=Services(
                database=_database(report.database),
                rate_limiting=RateLimitHealth(
                    status=_word(limiter is not None),
                    stats=RateLimitStats(limiter.total_identifiers, limiter.total_requests)
                    if limiter
                    else None,
                ),
                cache=CacheHealth(
                    status=_word(cache is not None),
                    stats=CacheStats(cache.total_keys, cache.expired_keys) if cache else None,
                ),
            ),
        )
        return _respond(body, healthy=report.status != HealthStatus.UNHEALTHY)

    @get(
        "/database",
        operation_id="healthDatabase",
        summary="Database health and pool",
        responses={
            HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
                DatabaseDetail, description="The database is down; see `Retry-After`."
            )
        },
    )
    async def database(self, container: NamedDependency[Container]) -> Response[DatabaseDetail]:
        status = await container.health.check_database()
        body = DatabaseDetail(
            status=_word(status.healthy), response_time_ms=status.response_time_ms, pool=status.pool
        )
        return _respond(body, healthy=status.healthy)
