"""The connection pool and the translation of driver errors into the core's.

Every repository borrows connections through ``Database.connection()``, which
bounds the wait: an exhausted pool or an unreachable server becomes
``UnavailableError`` (HTTP 503) within ``pool_timeout`` seconds instead of a
hung request.

A borrowed connection is checked only if it sat idle for a moment: under load
a connection comes back within milliseconds and is trusted, and one that broke
in use is discarded by the pool on return.

Waiting out ``pool_timeout`` is right when every connection is busy, but
wasted when the server is gone: no connection is coming. So ``Database`` keeps
a circuit breaker. A sign of trouble (a connection that failed its check or
broke in use, a borrow that timed out, the pool giving up reconnecting) makes
one background task try a fresh connection. Only if that fails is the database
marked down: from then on every borrow fails at once, and so do those already
waiting. The task keeps trying, backing off, and when the server answers again
it opens a fresh pool (the old one may be deep in its own reconnection backoff)
and marks the database up. An exhausted pool on a healthy server never trips
the breaker, since the fresh connection succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import DictRow, dict_row

from gemini_core.errors import UnavailableError
from gemini_core.ports import DatabaseStatus

log = logging.getLogger(__name__)

DATABASE_DOWN = "The database is unavailable; try again shortly."
# A connection returned longer ago than this is checked before it is lent again.
TRUST_RECENT_SECONDS = 1.0
# A health check answers within this (or the pool timeout, if shorter), so a
# load balancer's probe never hangs on the pool.
HEALTH_CHECK_SECONDS = 2.0
# While the database is down, how often to try it again: soon at first, then
# backing off so a long outage costs the server little.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
# libpq's connect_timeout is in whole seconds, and it treats less than 2 as 2.
PROBE_CONNECT_TIMEOUT = 2

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
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._health_check_timeout = min(pool_timeout, HEALTH_CHECK_SECONDS)
        self._last_used: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self.pool = self._new_pool()
        self._down = False
        self._suspicion = asyncio.Event()
        # The deadlines of the borrows waiting for the pool: marking the
        # database down moves them to now, so nobody waits for nothing.
        self._waiting: set[asyncio.Timeout] = set()
        # One slot per connection the pool may hold (see ``_borrow``).
        self._slots = asyncio.Semaphore(max_size)
        self._watcher: asyncio.Task[None] | None = None

    def _new_pool(self) -> psycopg_pool.AsyncConnectionPool[Connection]:
        return psycopg_pool.AsyncConnectionPool(
            self._url,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            timeout=self.pool_timeout,
            # Background reconnection backs off exponentially; give up on a
            # streak after a few seconds so that, once the server is back, the
            # next request starts a fresh attempt instead of waiting out a
            # minutes-long backoff. Giving up is also a sign for the breaker.
            reconnect_timeout=max(10.0, 2 * self.pool_timeout),
            reconnect_failed=self._reconnect_failed,
            check=self._check_if_idle,
            kwargs={
                "connect_timeout": self._connect_timeout,
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
            try:
                await psycopg_pool.AsyncConnectionPool.check_connection(conn)
            except psycopg.OperationalError:
                self._suspect()
                raise

    async def _reconnect_failed(self, _: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._suspect()

    async def open(self, *, wait_seconds: float = 30.0) -> None:
        """Open the pool and wait until ``min_size`` connections are made."""
        await self.pool.open(wait=True, timeout=wait_seconds)
        self._watcher = asyncio.create_task(self._watch(), name="gemini-database-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, object]]]:
        """Borrow a connection; ``UnavailableError`` if none can be had in time,
        at once if the database is known to be down."""
        pool, conn = await self._borrow()
        try:
            yield conn
        except psycopg.OperationalError as exc:
            # Lost connection, server shutting down, ...: not the caller's
            # fault. A statement that merely failed leaves the connection
            # whole; one that broke it may mean the server is gone.
            if conn.broken:
                self._suspect()
            raise UnavailableError(DATABASE_DOWN) from exc
        finally:
            self._last_used[conn] = time.monotonic()
            try:
                # The pool rolls back a transaction left open, and discards a
                # broken connection; one from a pool swapped out meanwhile
                # (``_reopen``) is closed.
                await pool.putconn(conn)
            finally:
                self._slots.release()

    async def _borrow(self) -> tuple[psycopg_pool.AsyncConnectionPool[Connection], Connection]:
        """A slot and a connection from the current pool (which ``putconn`` needs back)."""
        if self._down:
            raise UnavailableError(DATABASE_DOWN)
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout_at(loop.time() + self.pool_timeout)
        self._waiting.add(deadline)
        try:
            async with deadline:
                # Borrowers queue here, not in the pool: an asyncio semaphore
                # is far cheaper to wait on than the pool's queue (which makes
                # a task per waiting borrower), and whoever gets past it finds a
                # connection ready, or one being made while the pool grows.
                await self._slots.acquire()
                try:
                    pool = self.pool
                    left = max(0.0, deadline.when() - loop.time())  # type: ignore[operator]
                    # getconn and putconn rather than pool.connection(): a third of the cost.
                    return pool, await pool.getconn(timeout=left)
                except BaseException:
                    self._slots.release()
                    raise
        except TimeoutError as exc:
            if not self._down:  # every connection stayed busy: is the server there?
                self._suspect()
            raise UnavailableError(DATABASE_DOWN) from exc
        except psycopg_pool.PoolTimeout as exc:
            self._suspect()
            raise UnavailableError(DATABASE_DOWN) from exc
        except psycopg_pool.PoolClosed as exc:
            raise UnavailableError(DATABASE_DOWN) from exc
        finally:
            self._waiting.discard(deadline)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, object]]]:
        """Borrow a connection inside one transaction."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def check(self) -> DatabaseStatus:
        """The ``DatabaseProbe`` port: one ``SELECT 1`` and the pool's numbers,
        within ``HEALTH_CHECK_SECONDS`` (or the pool timeout, if shorter)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._health_check_timeout):
                async with self.connection() as conn:
                    await conn.execute("SELECT 1")
            healthy = True
        except TimeoutError:
            # No answer in time: all connections busy, or a server that has
            # stopped answering. A fresh connection tells which.
            self._suspect()
            healthy = False
        except UnavailableError:
            healthy = False
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        return DatabaseStatus(healthy=healthy, response_time_ms=elapsed_ms, pool=self.stats())

    def stats(self) -> dict[str, int]:
        stats = self.pool.get_stats()
        keys = ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")
        return {key: int(stats.get(key, 0)) for key in keys}

    # --- the circuit breaker ---------------------------------------------------

    def _suspect(self) -> None:
        """Something went wrong that a down server would explain; let the
        watcher find out whether it is."""
        self._suspicion.set()

    async def _watch(self) -> None:
        while True:
            await self._suspicion.wait()
            self._suspicion.clear()
            try:
                if await self._server_answers():
                    # Busy, not down. However many borrows time out meanwhile,
                    # a busy server gets no more than two extra connections a second.
                    await asyncio.sleep(RETRY_FIRST_SECONDS)
                    continue
                self._mark_down()
                delay = RETRY_FIRST_SECONDS
                while True:
                    await asyncio.sleep(delay)
                    if await self._server_answers() and await self._reopen():
                        break
                    delay = min(2 * delay, RETRY_MAX_SECONDS)
                log.info("the database answers again; serving requests")
            except Exception:
                # A surprise must not leave the database marked down for good:
                # requests go back to waiting on the pool, as without a breaker.
                log.exception("watching the database failed; requests will try the pool")
            self._suspicion.clear()  # what went wrong while it was down is answered
            self._down = False

    async def _server_answers(self) -> bool:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, connect_timeout=PROBE_CONNECT_TIMEOUT
            )
        except (psycopg.Error, OSError):
            return False
        await conn.close()
        return True

    def _mark_down(self) -> None:
        if not self._down:
            self._down = True
            log.warning("the database does not answer; refusing requests until it does")
        now = asyncio.get_running_loop().time()
        for deadline in self._waiting:
            if not deadline.expired():
                deadline.reschedule(now)

    async def _reopen(self) -> bool:
        """Swap in a fresh pool of ``min_size`` connections; whether it opened."""
        fresh = self._new_pool()
        try:
            await fresh.open(wait=True, timeout=float(self._connect_timeout))
        except psycopg_pool.PoolTimeout:
            await fresh.close()
            return False
        except BaseException:
            await fresh.close()
            raise
        stale, self.pool = self.pool, fresh
        # Connections still lent out of the stale pool close when returned.
        await stale.close()
        return True
