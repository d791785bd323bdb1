"""The usage rollup (``usage_days``) in PostgreSQL: read here, kept by the
statements that start and finish answers (``adapters.postgres.chats``).

A user's report reads their rows of the range by primary key; the admins'
report sums the range's rows by user (``usage_days_day_idx`` holds every
column it needs) and joins the users of one page. Neither reads ``messages``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import date

from psycopg.rows import scalar_row

from adapters.postgres._common import fetch_all, pairs, rows_as
from adapters.postgres.pool import Database
from gemini_core.entities import DailyUsage, User, UserUsage, UserUsagePage
from gemini_core.errors import InvalidInputError

__all__ = ["PostgresUsageRepository"]

_DAYS = """
SELECT day, messages, prompt_tokens, completion_tokens
FROM usage_days
WHERE user_id = %(user_id)s AND day BETWEEN %(first)s::date AND %(last)s::date
ORDER BY day
"""

# The total and one page in one round trip; the LEFT JOIN keeps the total's
# row when the page is empty (its other columns NULL).
_BY_USER = """
WITH summed AS (
    SELECT user_id,
           sum(messages)::bigint AS usage_messages,
           sum(prompt_tokens)::bigint AS usage_prompt_tokens,
           sum(completion_tokens)::bigint AS usage_completion_tokens
    FROM usage_days
    WHERE day BETWEEN %(first)s::date AND %(last)s::date
    GROUP BY user_id
),
ranked AS (
    SELECT summed.*, users.*
    FROM summed JOIN users ON users.id = summed.user_id
)
SELECT counted.total, page.*
FROM (SELECT count(*) AS total FROM ranked) AS counted
LEFT JOIN (
    SELECT * FROM ranked
    ORDER BY usage_prompt_tokens + usage_completion_tokens DESC, usage_messages DESC, id
    OFFSET %(offset)s LIMIT %(limit)s
) AS page ON true
ORDER BY page.usage_prompt_tokens + page.usage_completion_tokens DESC,
         page.usage_messages DESC, page.id
"""


@dataclass(frozen=True, slots=True)
class _Sums:
    messages: int
    prompt_tokens: int
    completion_tokens: int


_DAY_ROWS = rows_as(DailyUsage)
# The total, and a user with their sums unless the page is empty.
_BY_USER_ROWS = pairs(
    scalar_row, pairs(rows_as(User, optional=True), rows_as(_Sums, prefix="usage_", optional=True))
)


class PostgresUsageRepository:
    """The ``UsageRepository`` port on ``usage_days``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def days(self, user_id: int, first: date, last: date) -> builtins.list[DailyUsage]:
        params = {"user_id": user_id, "first": first, "last": last}
        return await fetch_all(self._db, _DAYS, params, _DAY_ROWS)

    async def by_user(self, first: date, last: date, *, offset: int, limit: int) -> UserUsagePage:
        if offset < 0 or limit < 0:
            raise InvalidInputError("A value is out of the allowed range.")
        params = {"first": first, "last": last, "offset": offset, "limit": limit}
        rows = await fetch_all(self._db, _BY_USER, params, _BY_USER_ROWS)
        items = [
            UserUsage(
                user=user,
                messages=sums.messages,
                prompt_tokens=sums.prompt_tokens,
                completion_tokens=sums.completion_tokens,
            )
            for _, (user, sums) in rows
            if user is not None and sums is not None
        ]
        return UserUsagePage(items=items, total=int(rows[0][0]) if rows else 0)
