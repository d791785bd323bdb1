"""What every PostgreSQL repository shares: one statement on a pooled
connection, with the driver's errors turned into the core's.

Each repository method is a single statement (data-modifying CTEs where a
change touches two tables), so autocommit gives it atomicity without holding
a transaction open across ``await``s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, LiteralString, cast

import psycopg
from psycopg import errors as pg_errors

from adapters.postgres.pool import Database
from gemini_core.errors import ConflictError, InvalidInputError, NotFoundError

Row = dict[str, Any]
Params = Mapping[str, Any]

# Unique constraints (or unique indexes) by name, and the field each guards.
_CONFLICT_FIELDS = {
    "users_email_key": "email",
    "users_username_key": "username",
    "file_uploads_filename_key": "filename",
}


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn integrity and data errors into ``ConflictError`` and friends.

    Connection-level failures are the pool's business (``UnavailableError``).
    """
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        field = _CONFLICT_FIELDS.get(exc.diag.constraint_name or "")
        detail = f"That {field} is already taken." if field else "That value is already taken."
        raise ConflictError(detail, field=field) from exc
    except pg_errors.ForeignKeyViolation as exc:
        raise NotFoundError("A record this refers to does not exist.") from exc
    except (pg_errors.IntegrityError, psycopg.DataError) as exc:
        # A CHECK or NOT NULL violation, a number out of range, a NUL in text:
        # the caller passed a value the schema refuses.
        raise InvalidInputError("A value is out of the allowed range.") from exc


async def fetch_one(db: Database, query: LiteralString, params: Params) -> Row | None:
    async with db.connection() as conn:
        with translated_errors():
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
    return cast("Row | None", row)


async def fetch_all(db: Database, query: LiteralString, params: Params) -> list[Row]:
    async with db.connection() as conn:
        with translated_errors():
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
    return cast("list[Row]", rows)


async def execute(db: Database, query: LiteralString, params: Params) -> int:
    """Run a statement for its effect; return the number of rows it touched."""
    async with db.connection() as conn:
        with translated_errors():
            cursor = await conn.execute(query, params)
    return cursor.rowcount


def utc(value: datetime) -> datetime:
    """``timestamptz`` arrives in the session's time zone; the core wants UTC."""
    return value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
