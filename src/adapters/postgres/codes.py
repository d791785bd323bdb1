"""One-time codes in PostgreSQL.

Consuming a code must have a single winner, so it is a conditional UPDATE:
PostgreSQL re-checks the condition on the row's newest version after waiting
for a concurrent writer, so of two racing requests exactly one sees a row
updated.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import scalar_row

from adapters.postgres._common import (
    execute,
    fetch_one,
    query_all,
    query_one,
    rows_as,
    translated_errors,
    utc,
)
from adapters.postgres.pool import Database
from gemini_core.entities import NewOtpVerification, OtpPurpose, OtpVerification
from gemini_core.errors import NotFoundError
from gemini_core.ports import IssueGuard

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
