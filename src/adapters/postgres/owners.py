"""The ``AnswerOwner`` port on a PostgreSQL advisory lock that a process holds
for as long as it lives.

The lock is a session lock on a connection of its own (not the pool's), so
PostgreSQL lets it go exactly when the process's session ends: a clean close,
a crash, a kill, or (within about 25 seconds, by keepalives) a lost host.
``fail_orphaned`` finds the live keys in ``pg_locks``.

Should the connection break while the process lives on, a watcher takes the
same key again at once on a fresh connection, and keeps trying, backing off,
while the server cannot be reached. Until it has, the key looks dead, and a
sweep meanwhile may fail this process's answers: the price of a broken
connection, kept short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import psycopg

from adapters.postgres._common import ANSWER_OWNER_LOCK_CLASS
from adapters.postgres._dedicated import (
    Connection,
    close_quietly,
    connect,
    describe,
    retry_delays,
)
from gemini_core.errors import UnavailableError

log = logging.getLogger(__name__)

_TRY_LOCK = "SELECT pg_try_advisory_lock(%(lock_class)s, %(key)s)"
_UNLOCK = "SELECT pg_advisory_unlock(%(lock_class)s, %(key)s)"
# The session holding a two-key advisory lock (objsubid = 2) in this database.
_HOLDER = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = %(lock_class)s AND objid = %(key)s AND objsubid = 2
"""
_MAX_KEY = 2**31 - 1  # keys are positive int4s
_APPLICATION_NAME = "gemini-answer-owner"


class PostgresAnswerOwner:
    def __init__(self, url: str) -> None:
        self._url = url
        self._key: int | None = None
        self._conn: Connection | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def key(self) -> int:
        if self._key is None:
            raise RuntimeError("the answer owner has not started")
        return self._key

    async def start(self) -> None:
        """Take a free random key; ``UnavailableError`` if the database cannot
        be reached."""
        if self._watcher is not None:
            raise RuntimeError("the answer owner has already started")
        try:
            conn = await connect(self._url, name=_APPLICATION_NAME)
        except (psycopg.Error, OSError) as exc:
            raise UnavailableError("The database is unavailable.") from exc
        try:
            while True:
                key = 1 + secrets.randbelow(_MAX_KEY)
                if await _try_lock(conn, key):
                    break
        except BaseException as exc:
            await close_quietly(conn)
            if isinstance(exc, psycopg.Error):
                raise UnavailableError("The database is unavailable.") from exc
            raise
        self._key, self._conn = key, conn
        self._watcher = asyncio.create_task(self._hold(key), name="gemini-answer-owner")

    async def aclose(self) -> None:
        """Let the key go and close the connection."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        conn, self._conn = self._conn, None
        if conn is not None and self._key is not None:
            # Closing would let it go too; unlocking says so explicitly.
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.execute(_UNLOCK, _lock(self._key))
        await close_quietly(conn)

    async def _hold(self, key: int) -> None:
        """Wait for the connection to break, then take ``key`` again; forever."""
        while True:
            conn = self._conn
            assert conn is not None
            lost_pid = conn.info.backend_pid
            error = await _until_broken(conn)
            log.warning(
                "lost the connection holding answer owner key %d (%s); taking it again",
                key,
                describe(error),
            )
            self._conn = None
            await close_quietly(conn)
            self._conn = await self._retake(key, lost_pid)
            log.info("answer owner key %d is held again", key)

    async def _retake(self, key: int, lost_pid: int) -> Connection:
        reported: str | None = None  # what went wrong last, said once per kind
        for delay in retry_delays():
            await asyncio.sleep(delay)
            conn: Connection | None = None
            try:
                conn = await connect(self._url, name=_APPLICATION_NAME)
                if await _try_lock(conn, key):
                    return conn
                holder = await _holder(conn, key)
                # A session the server has not yet noticed is gone still holds
                # it, until its keepalives run out.
                problem = "lost session" if holder == lost_pid else "other session"
                if problem != reported:
                    if holder == lost_pid:
                        log.warning(
                            "answer owner key %d is still held by the lost session "
                            "(pid %d); waiting for the server to end it",
                            key,
                            lost_pid,
                        )
                    else:
                        log.error(
                            "answer owner key %d is held by another session (pid %s); "
                            "two processes may share it; retrying",
                            key,
                            holder,
                        )
            except (psycopg.Error, OSError) as exc:
                problem = "unreachable"
                if problem != reported:
                    log.warning(
                        "cannot reach the database to take answer owner key %d again (%s); "
                        "retrying",
                        key,
                        describe(exc),
                    )
            except BaseException:
                await close_quietly(conn)
                raise
            reported = problem
            await close_quietly(conn)
        raise AssertionError("unreachable: retry_delays never ends")


def _lock(key: int) -> dict[str, int]:
    return {"lock_class": ANSWER_OWNER_LOCK_CLASS, "key": key}


async def _try_lock(conn: Connection, key: int) -> bool:
    cursor = await conn.execute(_TRY_LOCK, _lock(key))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _holder(conn: Connection, key: int) -> int | None:
    cursor = await conn.execute(_HOLDER, _lock(key))
    row = await cursor.fetchone()
    return int(row[0]) if row else None


async def _until_broken(conn: Connection) -> psycopg.Error:
    """Wait, costing nothing, until ``conn`` breaks; the error that broke it.

    ``notifies()`` is psycopg's way to wait on an idle connection: it reads
    whatever the server sends, and with nothing listened to it returns nothing
    and ends only when the connection does.
    """
    try:
        async for _ in conn.notifies():
            pass
    except psycopg.Error as exc:
        return exc
    return psycopg.OperationalError("the connection stopped waiting")
