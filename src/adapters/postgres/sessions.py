"""Refresh-token sessions in PostgreSQL.

Rotating a refresh token and revoking must have a single winner, so they are
conditional UPDATEs: PostgreSQL re-checks the condition on the row's newest
version after waiting for a concurrent writer, so of two racing requests
exactly one sees a row updated.
"""

from __future__ import annotations

from datetime import datetime

from adapters.postgres._common import execute, fetch_all, fetch_one, pairs, rows_as
from adapters.postgres.pool import Database
from gemini_core.entities import NewUserSession, User, UserSession

_SESSION_COLUMNS = """
    id, user_id, refresh_token_hash, user_agent, ip,
    created_at, last_used_at, expires_at, revoked_at
"""

_INSERT_SESSION = (
    """
INSERT INTO user_sessions (user_id, refresh_token_hash, user_agent, ip, expires_at)
VALUES (%(user_id)s, %(refresh_token_hash)s, %(user_agent)s, %(ip)s, %(expires_at)s)
RETURNING"""
    + _SESSION_COLUMNS
)

_GET_SESSION = "SELECT" + _SESSION_COLUMNS + "FROM user_sessions WHERE id = %(id)s"

# The check behind every authenticated request: one round trip for both rows.
_GET_SESSION_WITH_USER = """
SELECT s.id, s.user_id, s.refresh_token_hash, s.user_agent, s.ip,
       s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
       u.id AS u_id, u.email AS u_email, u.username AS u_username,
       u.full_name AS u_full_name, u.password_hash AS u_password_hash,
       u.is_active AS u_is_active, u.is_verified AS u_is_verified, u.is_admin AS u_is_admin,
       u.created_at AS u_created_at, u.updated_at AS u_updated_at,
       u.last_login_at AS u_last_login_at, u.last_seen_at AS u_last_seen_at,
       u.deleted_at AS u_deleted_at, u.daily_token_quota AS u_daily_token_quota,
       u.daily_message_quota AS u_daily_message_quota
FROM user_sessions AS s JOIN users AS u ON u.id = s.user_id
WHERE s.id = %(id)s
"""

_LIST_LIVE_SESSIONS = (
    "SELECT"
    + _SESSION_COLUMNS
    + """FROM user_sessions
WHERE user_id = %(user_id)s AND revoked_at IS NULL AND expires_at > %(now)s
ORDER BY id DESC
"""
)

# Compare-and-swap: only the request still holding the current hash wins.
_ROTATE_SESSION = """
UPDATE user_sessions SET refresh_token_hash = %(new_hash)s, last_used_at = %(now)s
WHERE id = %(id)s
  AND refresh_token_hash = %(expected_hash)s
  AND revoked_at IS NULL
  AND expires_at > %(now)s
"""

_TOUCH_SESSION = """
UPDATE user_sessions SET last_used_at = GREATEST(last_used_at, %(now)s::timestamptz)
WHERE id = %(id)s
"""

_REVOKE_SESSION = """
UPDATE user_sessions SET revoked_at = %(now)s
WHERE id = %(id)s AND revoked_at IS NULL AND expires_at > %(now)s
"""

# Expired, or revoked, before the cut-off; a live session matches neither.
_PURGE_ENDED_SESSIONS = """
DELETE FROM user_sessions WHERE expires_at < %(before)s OR revoked_at < %(before)s
"""

_REVOKE_ALL_SESSIONS = """
UPDATE user_sessions SET revoked_at = %(now)s
WHERE user_id = %(user_id)s
  AND revoked_at IS NULL
  AND expires_at > %(now)s
  AND id IS DISTINCT FROM %(except_id)s::bigint
"""


_SESSION_ROWS = rows_as(UserSession)
_SESSION_WITH_USER_ROWS = pairs(_SESSION_ROWS, rows_as(User, prefix="u_"))


class PostgresSessionRepository:
    """The ``SessionRepository`` port on the ``user_sessions`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, session: NewUserSession) -> UserSession:
        added = await fetch_one(
            self._db,
            _INSERT_SESSION,
            {
                "user_id": session.user_id,
                "refresh_token_hash": session.refresh_token_hash,
                "user_agent": session.user_agent,
                "ip": session.ip,
                "expires_at": session.expires_at,
            },
            _SESSION_ROWS,
        )
        assert added is not None
        return added

    async def get(self, session_id: int) -> UserSession | None:
        return await fetch_one(self._db, _GET_SESSION, {"id": session_id}, _SESSION_ROWS)

    async def get_with_user(self, session_id: int) -> tuple[UserSession, User] | None:
        params = {"id": session_id}
        return await fetch_one(self._db, _GET_SESSION_WITH_USER, params, _SESSION_WITH_USER_ROWS)

    async def list_live(self, user_id: int, now: datetime) -> list[UserSession]:
        params = {"user_id": user_id, "now": now}
        return await fetch_all(self._db, _LIST_LIVE_SESSIONS, params, _SESSION_ROWS)

    async def rotate(
        self, session_id: int, *, expected_hash: str, new_hash: str, now: datetime
    ) -> bool:
        params = {"id": session_id, "expected_hash": expected_hash, "new_hash": new_hash}
        return await execute(self._db, _ROTATE_SESSION, params | {"now": now}) > 0

    async def touch(self, session_id: int, now: datetime) -> None:
        await execute(self._db, _TOUCH_SESSION, {"id": session_id, "now": now})

    async def revoke(self, session_id: int, now: datetime) -> bool:
        return await execute(self._db, _REVOKE_SESSION, {"id": session_id, "now": now}) > 0

    async def revoke_all(self, user_id: int, now: datetime, *, except_id: int | None = None) -> int:
        return await execute(
            self._db,
            _REVOKE_ALL_SESSIONS,
            {"user_id": user_id, "now": now, "except_id": except_id},
        )

    async def purge_ended(self, before: datetime) -> int:
        return await execute(self._db, _PURGE_ENDED_SESSIONS, {"before": before})
