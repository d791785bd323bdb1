"""The connection pool and the translation of driver errors into the core's.

Every repository borrows connections through ``Database.connection()``, which
bounds the wait: an exhausted pool or an unreachable server becomes
``UnavailableError`` (HTTP 503) within ``pool_timeout`` seconds instead of a
hung request. Broken connections are checked out of the pool on borrow, so the
service recovers by itself once the server is back.

That check costs a round trip, so it is spent only on connections that sat
idle for a moment: under load a connection comes back within milliseconds and
is trusted, and one that broke in use is discarded by the pool on return.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import psycopg_pool
from psycopg.rows import DictRow, dict_row

from gemini_core.errors import UnavailableError
from gemini_core.ports import DatabaseStatus

DATABASE_DOWN = "The database is unavailable; try again shortly."
# A connection returned longer ago than this is checked before it is lent again.
TRUST_RECENT_SECONDS = 1.0

Connection = psycopg.AsyncConnection[DictRow]


class Database:
    """An ``AsyncConnectionPool`` created closed; ``open()`` it in the lifespan."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        pool_timeout: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        self.pool_timeout = pool_timeout
        self._last_used: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self.pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=pool_timeout,
            # Background reconnection backs off exponentially; give up on a
            # streak after a few seconds so that, once the server is back, the
            # next request starts a fresh attempt instead of waiting out a
            # minutes-long backoff.
            reconnect_timeout=max(10.0, 2 * pool_timeout),
            check=self._check_if_idle,
            kwargs={
                "connect_timeout": connect_timeout,
                "row_factory": dict_row,
                "autocommit": True,
                # Dead peers are noticed by the kernel rather than never.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
            name="gemini",
            connection_class=psycopg.AsyncConnection[DictRow],
        )

    async def _check_if_idle(self, conn: Connection) -> None:
        if time.monotonic() - self._last_used.get(conn, 0.0) > TRUST_RECENT_SECONDS:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def open(self, *, wait_seconds: float = 30.0) -> None:
        """Open the pool and wait until ``min_size`` connections are made."""
        await self.pool.open(wait=True, timeout=wait_seconds)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, object]]]:
        """Borrow a connection; ``UnavailableError`` if none can be had in time."""
        try:
            async with self.pool.connection(timeout=self.pool_timeout) as conn:
                try:
                    yield conn
                finally:
                    self._last_used[conn] = time.monotonic()
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise UnavailableError(DATABASE_DOWN) from exc
        except psycopg.OperationalError as exc:
            # Lost connection, server shutting down, ...: not the caller's fault.
            raise UnavailableError(DATABASE_DOWN) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, object]]]:
        """Borrow a connection inside one transaction."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def check(self) -> DatabaseStatus:
        """The ``DatabaseProbe`` port: one ``SELECT 1`` and the pool's numbers."""
        started = time.perf_counter()
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
            healthy = True
        except UnavailableError:
            healthy = False
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        return DatabaseStatus(healthy=healthy, response_time_ms=elapsed_ms, pool=self.stats())

    def stats(self) -> dict[str, int]:
        stats = self.pool.get_stats()
        keys = ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")
        return {key: int(stats.get(key, 0)) for key in keys}
