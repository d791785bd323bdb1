"""The admin dashboard's totals in one round trip.

Chats and messages are summed from ``user_counts``, a row per user kept by
triggers on ``chats`` (whose ``message_count`` the message insert keeps), so
the query reads a row per user however many chats and messages there are.
"""

from __future__ import annotations

from datetime import datetime

from adapters.postgres._common import fetch_one, rows_as
from adapters.postgres.pool import Database
from gemini_core.ports import Counts

_COUNTS = """
SELECT
    count(*) AS total_users,
    count(*) FILTER (WHERE GREATEST(u.last_login_at, u.last_seen_at) >= %(active_since)s)
        AS active_users,
    count(*) FILTER (WHERE u.created_at >= %(created_since)s) AS new_users,
    COALESCE(sum(c.chats), 0)::bigint AS total_chats,
    COALESCE(sum(c.messages), 0)::bigint AS total_messages
FROM users AS u LEFT JOIN user_counts AS c ON c.user_id = u.id
WHERE u.deleted_at IS NULL
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
