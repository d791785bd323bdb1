"""The usage rollup (``usage_days``) in PostgreSQL: read here, kept by the
statements that start and finish answers (``adapters.postgres.chats``).

A user's report reads their rows of the range by primary key. The admins'
report sums every user's usage over the range from a few rows a user: the
range is cut into aligned spans of 2 to 512 days (``usage_spans``, kept by a
trigger on ``usage_days``) and single days, so a year costs about what a
month does; it joins the users of one page. Neither reads ``messages``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import date, timedelta

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

# Every user's sums over a range: the range's days as a few aligned spans of
# usage_spans and single days of usage_days (see ``_cover``), so a user costs a
# handful of rows whatever the range. The total and one page in one round trip;
# the LEFT JOIN keeps the total's row when the page is empty (its other
# columns NULL).
_BY_USER = """
WITH parts AS (
    SELECT user_id, messages, prompt_tokens, completion_tokens
    FROM usage_days WHERE day = ANY(%(days)s::date[])
    UNION ALL
    SELECT spans.user_id, spans.messages, spans.prompt_tokens, spans.completion_tokens
    FROM unnest(%(levels)s::smallint[], %(starts)s::date[]) AS wanted(level, start)
    JOIN usage_spans AS spans ON spans.level = wanted.level AND spans.start = wanted.start
),
summed AS (
    SELECT user_id,
           sum(messages)::bigint AS usage_messages,
           sum(prompt_tokens)::bigint AS usage_prompt_tokens,
           sum(completion_tokens)::bigint AS usage_completion_tokens
    FROM parts
    GROUP BY user_id
),
page AS (
    SELECT * FROM summed
    ORDER BY usage_prompt_tokens + usage_completion_tokens DESC, usage_messages DESC, user_id
    OFFSET %(offset)s LIMIT %(limit)s
)
SELECT counted.total, page.*, users.*
FROM (SELECT count(*) AS total FROM summed) AS counted
LEFT JOIN page ON true
LEFT JOIN users ON users.id = page.user_id
ORDER BY page.usage_prompt_tokens + page.usage_completion_tokens DESC,
         page.usage_messages DESC, page.user_id
"""

_MAX_LEVEL = 9
"""The longest spans of usage_spans: 2^9 = 512 days (migration 0005)."""
_FIRST_DAY = date(1, 1, 1)
"""Where spans are aligned from: a span of 2^level days starts a multiple of 2^level
days after it."""


def _cover(first: date, last: date) -> tuple[list[date], list[int], list[date]]:
    """The days from ``first`` to ``last`` as single days and aligned spans (their
    levels and starts): each step takes the longest span that starts there and
    ends within the range, so a range needs at most two of each length."""
    days: list[date] = []
    levels: list[int] = []
    starts: list[date] = []
    at, end = (first - _FIRST_DAY).days, (last - _FIRST_DAY).days
    while at <= end:
        level = 0
        while level < _MAX_LEVEL and at % (2 << level) == 0 and at + (2 << level) - 1 <= end:
            level += 1
        if level == 0:
            days.append(_FIRST_DAY + timedelta(days=at))
        else:
            levels.append(level)
            starts.append(_FIRST_DAY + timedelta(days=at))
        at += 1 << level
    return days, levels, starts


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
        days, levels, starts = _cover(first, last)
        params = {
            "days": days,
            "levels": levels,
            "starts": starts,
            "offset": offset,
            "limit": limit,
        }
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
