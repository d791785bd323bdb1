"""The composition root: the one place that picks adapters and wires them.

``open_container(settings)`` reads nothing but the settings it is given: it
starts the embedded PostgreSQL when no database is configured, applies the
migrations, opens the pool and yields a ``Container``; leaving the context
closes everything in reverse order. ``memory_container`` wires the in-memory
adapters, for tests and for other Python services that embed the core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version

from adapters.cache import InMemoryCache
from adapters.clock import SystemClock
from adapters.memory import InMemoryDatabaseProbe, InMemoryRepositories
from adapters.postgres import migrations
from adapters.postgres.embedded import EmbeddedPostgres
from adapters.postgres.pool import Database
from adapters.postgres.repositories import (
    PostgresChatRepository,
    PostgresFileUploadRepository,
    PostgresMessageRepository,
    PostgresOtpRepository,
    PostgresSessionRepository,
    PostgresUserRepository,
)
from adapters.ratelimit import InMemoryRateLimiter
from gemini_core.health import HealthService
from gemini_core.ports import Clock
from web.container import Container
from web.settings import Settings

log = logging.getLogger(__name__)


def app_version() -> str:
    try:
        return version("gemini-backend")
    except PackageNotFoundError:
        return "0.0.0"


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database's URL, or the embedded server's for as long as
    the context lasts. A configured database never touches pgserver."""
    configured = settings.resolved_database_url
    if configured is not None:
        yield configured
        return
    embedded = EmbeddedPostgres(settings.embedded_database_dir)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


@asynccontextmanager
async def open_container(settings: Settings) -> AsyncIterator[Container]:
    async with AsyncExitStack() as stack:
        # Starting the embedded server takes a moment: keep it off the event loop.
        url = await asyncio.to_thread(stack.enter_context, database_url(settings))
        await asyncio.to_thread(migrations.apply, url)
        database = Database(
            url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            pool_timeout=settings.db_pool_timeout_seconds,
            connect_timeout=settings.db_connect_timeout_seconds,
        )
        await database.open()
        stack.push_async_callback(database.close)
        clock = SystemClock()
        rate_limiter = InMemoryRateLimiter(clock=clock)
        cache = InMemoryCache(clock=clock)
        yield Container(
            settings=settings,
            clock=clock,
            database=database,
            users=PostgresUserRepository(database),
            chats=PostgresChatRepository(database),
            messages=PostgresMessageRepository(database),
            files=PostgresFileUploadRepository(database),
            otps=PostgresOtpRepository(database),
            sessions=PostgresSessionRepository(database),
            rate_limiter=rate_limiter,
            cache=cache,
            health=HealthService(database=database, rate_limiter=rate_limiter, cache=cache),
            version=app_version(),
        )


def memory_container(settings: Settings, *, clock: Clock | None = None) -> Container:
    """Every port on in-memory adapters: no database, no network."""
    clock = clock or SystemClock()
    repos = InMemoryRepositories(clock=clock)
    database = InMemoryDatabaseProbe()
    rate_limiter = InMemoryRateLimiter(clock=clock)
    cache = InMemoryCache(clock=clock)
    return Container(
        settings=settings,
        clock=clock,
        database=database,
        users=repos.users,
        chats=repos.chats,
        messages=repos.messages,
        files=repos.files,
        otps=repos.otps,
        sessions=repos.sessions,
        rate_limiter=rate_limiter,
        cache=cache,
        health=HealthService(database=database, rate_limiter=rate_limiter, cache=cache),
        version=app_version(),
    )


def migrate(url: str, action: str, count: int = 1) -> list[str]:
    """``apply`` / ``rollback`` for the command line; returns the ids touched."""
    if action == "apply":
        return migrations.apply(url)
    if action == "rollback":
        return migrations.rollback(url, count)
    raise ValueError(f"unknown migration action {action!r}")


def migration_status(url: str) -> list[tuple[str, bool]]:
    return [(state.id, state.applied) for state in migrations.status(url)]


async def check_database(url: str) -> bool:
    """Whether the database answers; for ``gemini-backend check``."""
    database = Database(url, min_size=1, max_size=1, pool_timeout=5.0)
    try:
        await database.open(wait_seconds=10.0)
    except Exception:
        log.exception("cannot open a connection to the database")
        return False
    try:
        return (await database.check()).healthy
    finally:
        await database.close()
