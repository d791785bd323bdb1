"""The admin dashboard's totals in one round trip.

Messages are summed from ``chats.message_count`` (kept by the message insert)
rather than counted row by row, so the query stays cheap as history grows.
"""

from __future__ import annotations

from datetime import datetime

from adapters.postgres._common import fetch_one, rows_as
from adapters.postgres.pool import Database
from gemini_core.ports import Counts

_COUNTS = """
WITH live AS (
    SELECT id, created_at, GREATEST(last_login_at, last_seen_at) AS active_at
    FROM users WHERE deleted_at IS NULL
)
SELECT
    (SELECT count(*) FROM live) AS total_users,
    (SELECT count(*) FROM live WHERE active_at >= %(active_since)s) AS active_users,
    (SELECT count(*) FROM live WHERE created_at >= %(created_since)s) AS new_users,
    chats.total_chats,
    chats.total_messages
FROM (
    SELECT count(*) AS total_chats, COALESCE(sum(c.message_count), 0) AS total_messages
    FROM chats AS c JOIN live ON live.id = c.user_id
) AS chats
"""

# Every count is a bigint (sum of an integer column included), so an int.
_COUNTS_ROWS = rows_as(Counts)


class PostgresStatsRepository:
    """The ``StatsRepository`` port."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def counts(self, *, active_since: datetime, created_since: datetime) -> Counts:
        params = {"active_since": active_since, "created_since": created_since}
        counts = await fetch_one(self._db, _COUNTS, params, _COUNTS_ROWS)
        assert counts is not None
        return counts
