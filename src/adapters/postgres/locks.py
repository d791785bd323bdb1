"""The ``ExclusiveLock`` port on PostgreSQL's advisory locks: one holder at a
time across every process and host that shares the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.postgres.pool import Database

# The two-key form, with a class of our own, keeps these apart from the
# migrations' one-key lock and the per-email code locks.
_LOCK_CLASS = 0x6C6F636B  # "lock"
_TRY_LOCK = "SELECT pg_try_advisory_lock(%(lock_class)s, hashtext(%(name)s)) AS taken"
_UNLOCK = "SELECT pg_advisory_unlock(%(lock_class)s, hashtext(%(name)s))"


class PostgresExclusiveLock:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        # A session-level lock lives as long as the connection that took it,
        # so that connection stays borrowed until the work is done; if it
        # breaks, PostgreSQL lets the lock go with it.
        params = {"lock_class": _LOCK_CLASS, "name": name}
        async with self._db.connection() as conn:
            row = await (await conn.execute(_TRY_LOCK, params)).fetchone()
            taken = bool(row and row["taken"])
            try:
                yield taken
            finally:
                if taken:
                    await conn.execute(_UNLOCK, params)
