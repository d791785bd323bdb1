"""One-time codes and refresh-token sessions in PostgreSQL.

The state changes that must have a single winner (consuming a code, rotating
a refresh token, revoking) are conditional UPDATEs: PostgreSQL re-checks the
condition on the row's newest version after waiting for a concurrent writer,
so of two racing requests exactly one sees a row updated.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import scalar_row

from adapters.postgres._common import (
    execute,
    fetch_all,
    fetch_one,
    pairs,
    query_all,
    query_one,
    rows_as,
    translated_errors,
    utc,
)
from adapters.postgres.pool import Database
from gemini_core.entities import (
    NewOtpVerification,
    NewUserSession,
    OtpPurpose,
    OtpVerification,
    User,
    UserSession,
)
from gemini_core.errors import NotFoundError
from gemini_core.ports import IssueGuard

# --- one-time codes ----------------------------------------------------------

_OTP_COLUMNS = """
    id, email, purpose, code_hash, attempts, expires_at, consumed_at, created_at
"""

# A new code retires the unused earlier ones for the same email and purpose
# by marking them consumed, rather than deleting them: the hourly cap counts
# every code issued. Both happen in one statement, so a concurrent verify sees
# either the old code live or the new one, never both.
_INSERT_OTP = (
    """
WITH retired AS (
    UPDATE otp_verifications SET consumed_at = now()
    WHERE lower(email) = lower(%(email)s) AND purpose = %(purpose)s AND consumed_at IS NULL
)
INSERT INTO otp_verifications (email, purpose, code_hash, expires_at)
VALUES (%(email)s, %(purpose)s, %(code_hash)s, %(expires_at)s)
RETURNING"""
    + _OTP_COLUMNS
)

_LATEST_OTP = (
    "SELECT"
    + _OTP_COLUMNS
    + """FROM otp_verifications
WHERE lower(email) = lower(%(email)s) AND purpose = %(purpose)s
ORDER BY id DESC
LIMIT 1
"""
)

# Codes for one email are issued one at a time, across every connection: the
# lock lasts until the transaction ends, so the next issuer reads this code.
# The two-key form keeps these locks apart from the migrations' one-key lock.
_LOCK_OTP_EMAIL = """
SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(lower(%(email)s)))
"""
_OTP_EMAIL_LOCK_CLASS = 0x6F7470  # "otp"

_OTP_ISSUED_SINCE = """
SELECT created_at FROM otp_verifications
WHERE lower(email) = lower(%(email)s) AND created_at >= %(since)s
ORDER BY created_at
"""

_RECORD_OTP_FAILURE = """
UPDATE otp_verifications SET attempts = attempts + 1 WHERE id = %(id)s RETURNING attempts
"""

_CONSUME_OTP = """
UPDATE otp_verifications SET consumed_at = %(at)s WHERE id = %(id)s AND consumed_at IS NULL
"""

_DELETE_OTP = "DELETE FROM otp_verifications WHERE id = %(id)s"

_PURGE_OTPS = "DELETE FROM otp_verifications WHERE expires_at < %(before)s"


_OTP_ROWS = rows_as(OtpVerification)


def _otp_params(otp: NewOtpVerification) -> dict[str, object]:
    return {
        "email": otp.email,
        "purpose": otp.purpose.value,
        "code_hash": otp.code_hash,
        "expires_at": otp.expires_at,
    }


class PostgresOtpRepository:
    """The ``OtpRepository`` port on the ``otp_verifications`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, otp: NewOtpVerification) -> OtpVerification:
        added = await fetch_one(self._db, _INSERT_OTP, _otp_params(otp), _OTP_ROWS)
        assert added is not None
        return added

    async def add_if_allowed(
        self, otp: NewOtpVerification, *, since: datetime, allow: IssueGuard
    ) -> OtpVerification:
        async with self._db.transaction() as conn:
            with translated_errors():
                lock = {"lock_class": _OTP_EMAIL_LOCK_CLASS, "email": otp.email}
                await conn.execute(_LOCK_OTP_EMAIL, lock)
                issued_since = {"email": otp.email, "since": since}
                issued = await query_all(conn, _OTP_ISSUED_SINCE, issued_since, scalar_row)
                allow([utc(created_at) for created_at in issued])
                added = await query_one(conn, _INSERT_OTP, _otp_params(otp), _OTP_ROWS)
        assert added is not None
        return added

    async def latest(self, email: str, purpose: OtpPurpose) -> OtpVerification | None:
        params = {"email": email, "purpose": purpose.value}
        return await fetch_one(self._db, _LATEST_OTP, params, _OTP_ROWS)

    async def record_attempt(self, otp_id: int) -> int:
        attempts = await fetch_one(self._db, _RECORD_OTP_FAILURE, {"id": otp_id}, scalar_row)
        if attempts is None:
            raise NotFoundError("No such code.")
        return int(attempts)

    async def consume(self, otp_id: int, at: datetime) -> bool:
        return await execute(self._db, _CONSUME_OTP, {"id": otp_id, "at": at}) > 0

    async def delete(self, otp_id: int) -> None:
        await execute(self._db, _DELETE_OTP, {"id": otp_id})

    async def purge_expired(self, before: datetime) -> int:
        return await execute(self._db, _PURGE_OTPS, {"before": before})


# --- sessions ----------------------------------------------------------------

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
       u.deleted_at AS u_deleted_at
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
