"""Users in PostgreSQL.

Emails and usernames are compared case-insensitively, matching the unique
indexes on ``lower(email)`` and ``lower(username)``; they are stored as given
(the service lower-cases emails before they get here).
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import scalar_row

from adapters.postgres._common import (
    execute,
    fetch_all,
    fetch_one,
    pairs,
    query_one,
    rows_as,
    translated_errors,
)
from adapters.postgres.pool import Database
from gemini_core.entities import NewUser, User, UserChanges, UserPage
from gemini_core.errors import InvalidInputError, NotFoundError

_COLUMNS = """
    id, email, username, full_name, password_hash, is_active, is_verified, is_admin,
    created_at, updated_at, last_login_at, last_seen_at, deleted_at,
    daily_token_quota, daily_message_quota
"""

_INSERT = (
    """
INSERT INTO users (email, username, full_name, password_hash, is_active, is_verified, is_admin)
VALUES (%(email)s, %(username)s, %(full_name)s, %(password_hash)s,
        %(is_active)s, %(is_verified)s, %(is_admin)s)
RETURNING"""
    + _COLUMNS
)

_GET = "SELECT" + _COLUMNS + "FROM users WHERE id = %(id)s"

_GET_BY_EMAIL = "SELECT" + _COLUMNS + "FROM users WHERE lower(email) = lower(%(email)s)"

# One statement for every combination of changes: a NULL parameter keeps the
# column as it is. Every update bumps updated_at.
_UPDATE = (
    """
UPDATE users SET
    email = COALESCE(%(email)s::text, email),
    username = COALESCE(%(username)s::text, username),
    full_name = CASE WHEN %(clear_full_name)s THEN NULL
                     ELSE COALESCE(%(full_name)s::text, full_name) END,
    password_hash = COALESCE(%(password_hash)s::text, password_hash),
    is_active = COALESCE(%(is_active)s::boolean, is_active),
    is_verified = COALESCE(%(is_verified)s::boolean, is_verified),
    is_admin = COALESCE(%(is_admin)s::boolean, is_admin),
    last_login_at = COALESCE(%(last_login_at)s::timestamptz, last_login_at),
    deleted_at = COALESCE(%(deleted_at)s::timestamptz, deleted_at),
    daily_token_quota = CASE WHEN %(clear_daily_token_quota)s THEN NULL
                             ELSE COALESCE(%(daily_token_quota)s::bigint, daily_token_quota) END,
    daily_message_quota = CASE WHEN %(clear_daily_message_quota)s THEN NULL
                               ELSE COALESCE(%(daily_message_quota)s::integer,
                                             daily_message_quota) END,
    updated_at = now()
WHERE id = %(id)s
RETURNING"""
    + _COLUMNS
)

# Changes that may take away an admin are made one at a time, each then
# checking that an active admin is left: two admins demoting each other at
# once would otherwise each see the other still in place.
_LOCK_ADMIN_CHANGES = "SELECT pg_advisory_xact_lock(%(lock_class)s, 0)"
_ADMIN_CHANGES_LOCK_CLASS = 0x61646D  # "adm"

_ANY_ACTIVE_ADMIN = """
SELECT EXISTS (
    SELECT 1 FROM users WHERE is_admin AND is_active AND deleted_at IS NULL
) AS found
"""

# Requests may finish out of order; the latest sighting wins.
_TOUCH = """
UPDATE users SET last_seen_at = GREATEST(last_seen_at, %(seen_at)s::timestamptz)
WHERE id = %(id)s
"""

# The total and one page in a single round trip: the LEFT JOIN keeps the
# total's row when the page is empty (then its user columns are NULL).
# strpos rather than LIKE, so "%" and "_" in the query are plain characters.
_SEARCH = (
    """
WITH matched AS (
    SELECT"""
    + _COLUMNS
    + """FROM users
    WHERE deleted_at IS NULL
      AND (%(query)s::text IS NULL
           OR strpos(lower(email), lower(%(query)s::text)) > 0
           OR strpos(lower(username), lower(%(query)s::text)) > 0)
)
SELECT counted.total, page.*
FROM (SELECT count(*) AS total FROM matched) AS counted
LEFT JOIN (SELECT * FROM matched ORDER BY id OFFSET %(offset)s LIMIT %(limit)s) AS page ON true
ORDER BY page.id
"""
)


USER_ROWS = rows_as(User)
# The total, and a user unless the page is empty.
_SEARCH_ROWS = pairs(scalar_row, rows_as(User, optional=True))


def _update_params(user_id: int, changes: UserChanges) -> dict[str, object]:
    return {
        "id": user_id,
        "email": changes.email,
        "username": changes.username,
        "full_name": changes.full_name,
        "clear_full_name": changes.clear_full_name,
        "password_hash": changes.password_hash,
        "is_active": changes.is_active,
        "is_verified": changes.is_verified,
        "is_admin": changes.is_admin,
        "last_login_at": changes.last_login_at,
        "deleted_at": changes.deleted_at,
        "daily_token_quota": changes.daily_token_quota,
        "clear_daily_token_quota": changes.clear_daily_token_quota,
        "daily_message_quota": changes.daily_message_quota,
        "clear_daily_message_quota": changes.clear_daily_message_quota,
    }


class PostgresUserRepository:
    """The ``UserRepository`` port on the ``users`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, user: NewUser) -> User:
        added = await fetch_one(
            self._db,
            _INSERT,
            {
                "email": user.email,
                "username": user.username,
                "full_name": user.full_name,
                "password_hash": user.password_hash,
                "is_active": user.is_active,
                "is_verified": user.is_verified,
                "is_admin": user.is_admin,
            },
            USER_ROWS,
        )
        assert added is not None
        return added

    async def get(self, user_id: int) -> User | None:
        return await fetch_one(self._db, _GET, {"id": user_id}, USER_ROWS)

    async def get_by_email(self, email: str) -> User | None:
        return await fetch_one(self._db, _GET_BY_EMAIL, {"email": email}, USER_ROWS)

    async def update(self, user_id: int, changes: UserChanges) -> User:
        user = await fetch_one(self._db, _UPDATE, _update_params(user_id, changes), USER_ROWS)
        if user is None:
            raise NotFoundError("No such user.")
        return user

    async def update_keeping_an_admin(self, user_id: int, changes: UserChanges) -> User | None:
        async with self._db.transaction() as conn:
            with translated_errors():
                await conn.execute(_LOCK_ADMIN_CHANGES, {"lock_class": _ADMIN_CHANGES_LOCK_CLASS})
                params = _update_params(user_id, changes)
                user = await query_one(conn, _UPDATE, params, USER_ROWS)
                if user is None:
                    raise NotFoundError("No such user.")
                if not await query_one(conn, _ANY_ACTIVE_ADMIN, {}, scalar_row):
                    raise psycopg.Rollback
                return user
        return None

    async def touch(self, user_id: int, seen_at: datetime) -> None:
        await execute(self._db, _TOUCH, {"id": user_id, "seen_at": seen_at})

    async def search(self, query: str | None, *, offset: int, limit: int) -> UserPage:
        if offset < 0 or limit < 0:
            raise InvalidInputError("offset and limit must not be negative")
        params = {"query": query, "offset": offset, "limit": limit}
        rows = await fetch_all(self._db, _SEARCH, params, _SEARCH_ROWS)
        total = int(rows[0][0]) if rows else 0
        return UserPage(items=[user for _, user in rows if user is not None], total=total)
