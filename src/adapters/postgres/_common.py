"""What every PostgreSQL repository shares: one statement on a pooled
connection, with the driver's errors turned into the core's, and rows built
into the core's entities.

Each repository method is a single statement (data-modifying CTEs where a
change touches two tables), so autocommit gives it atomicity without holding
a transaction open across ``await``s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from operator import itemgetter, methodcaller
from types import NoneType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    LiteralString,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import AsyncRowFactory, RowMaker, no_result

from adapters.postgres.pool import Database
from gemini_core.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Params = Mapping[str, Any]
E = TypeVar("E", bound="DataclassInstance")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")

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


# --- statements ------------------------------------------------------------------


async def query_one(
    conn: psycopg.AsyncConnection[Any],
    query: LiteralString,
    params: Params,
    rows: AsyncRowFactory[R],
) -> R | None:
    """The first row of ``query`` on ``conn``, made by ``rows``; errors not translated."""
    async with conn.cursor(row_factory=rows) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchone()


async def query_all(
    conn: psycopg.AsyncConnection[Any],
    query: LiteralString,
    params: Params,
    rows: AsyncRowFactory[R],
    *,
    prepare: bool | None = None,
) -> list[R]:
    """Every row of ``query``; ``prepare=False`` has PostgreSQL plan it for these
    very values each time, where the best plan depends on them."""
    async with conn.cursor(row_factory=rows) as cursor:
        await cursor.execute(query, params, prepare=prepare)
        return await cursor.fetchall()


async def fetch_one(
    db: Database, query: LiteralString, params: Params, rows: AsyncRowFactory[R]
) -> R | None:
    async with db.connection() as conn:
        with translated_errors():
            return await query_one(conn, query, params, rows)


async def fetch_all(
    db: Database,
    query: LiteralString,
    params: Params,
    rows: AsyncRowFactory[R],
    *,
    prepare: bool | None = None,
) -> list[R]:
    async with db.connection() as conn:
        with translated_errors():
            return await query_all(conn, query, params, rows, prepare=prepare)


async def execute(db: Database, query: LiteralString, params: Params) -> int:
    """Run a statement for its effect; return the number of rows it touched."""
    async with db.connection() as conn:
        with translated_errors():
            cursor = await conn.execute(query, params)
    return cursor.rowcount


# --- rows into entities -------------------------------------------------------------


def utc(value: datetime) -> datetime:
    """``timestamptz`` arrives in the session's time zone; the core wants UTC."""
    return value.astimezone(UTC)


Conversion = Callable[[Any], Any]
_TO_UTC: Conversion = methodcaller("astimezone", UTC)


@overload
def rows_as(
    entity: type[E], *, prefix: str = "", optional: Literal[False] = False
) -> AsyncRowFactory[E]: ...
@overload
def rows_as(
    entity: type[E], *, prefix: str = "", optional: Literal[True]
) -> AsyncRowFactory[E | None]: ...
def rows_as(
    entity: type[E], *, prefix: str = "", optional: bool = False
) -> AsyncRowFactory[E] | AsyncRowFactory[E | None]:
    """A row factory, like psycopg's ``class_row``, making one of the core's
    entities of each row: each field of ``entity`` takes the column of its
    name after ``prefix``, converted as the field's type asks (timestamps to
    UTC, text to an enum, arrays to tuples; see ``_conversion``).

    Other columns are left alone, so one row can hold more than one entity
    (see ``pairs``). With ``optional``, a row whose columns for ``entity`` are
    all NULL (the empty side of an outer join) makes ``None``.
    """
    fields = _fields(entity)
    # Worked out once per shape of result (in practice, per statement).
    makers: dict[tuple[bytes | None, ...], RowMaker[Any]] = {}

    def factory(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[Any]:
        result = cursor.pgresult
        if result is None or not result.nfields:
            return no_result
        shape = tuple(result.fname(index) for index in range(result.nfields))
        make = makers.get(shape)
        if make is None:
            encoding = cursor.connection.info.encoding
            columns = [(name or b"").decode(encoding) for name in shape]
            make = makers[shape] = _maker(entity, fields, columns, prefix, optional=optional)
        return make

    return factory


def pairs(first: AsyncRowFactory[A], second: AsyncRowFactory[B]) -> AsyncRowFactory[tuple[A, B]]:
    """A row factory making two values of each row, e.g. an entity and what is
    joined to it."""

    def factory(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[tuple[A, B]]:
        make_first, make_second = first(cursor), second(cursor)
        return lambda values: (make_first(values), make_second(values))

    return factory


def _maker(
    entity: type[E],
    fields: Sequence[tuple[str, Conversion | None]],
    columns: Sequence[str],
    prefix: str,
    *,
    optional: bool,
) -> RowMaker[Any]:
    where: dict[str, int] = {}
    for index, column in enumerate(columns):
        if column.startswith(prefix):
            where.setdefault(column.removeprefix(prefix), index)
    missing = [name for name, _ in fields if name not in where]
    if missing:
        raise TypeError(f"no column for {entity.__name__}.{', '.join(missing)} ({prefix=})")
    take = _taker([where[name] for name, _ in fields])
    converted = [(position, convert) for position, (_, convert) in enumerate(fields) if convert]

    # Positional arguments and C-level conversions: this runs for every row.
    def make(values: Sequence[Any]) -> E:
        arguments = list(take(values))
        for position, convert in converted:
            value = arguments[position]
            if value is not None:
                arguments[position] = convert(value)
        return entity(*arguments)

    def make_or_none(values: Sequence[Any]) -> E | None:
        if all(value is None for value in take(values)):
            return None
        return make(values)

    return make_or_none if optional else make


@cache
def _fields(entity: type[DataclassInstance]) -> tuple[tuple[str, Conversion | None], ...]:
    """The fields of ``entity`` in order, each with what turns a column's value into it."""
    hints = get_type_hints(entity)
    fields = dataclasses.fields(entity)
    if not all(field.init and not field.kw_only for field in fields):
        raise TypeError(f"{entity.__name__} must take every field positionally")
    return tuple((field.name, _conversion(hints[field.name])) for field in fields)


def _conversion(hint: Any) -> Conversion | None:
    """What a field of this type needs done to a column's (non-NULL) value."""
    union = get_origin(hint) in {Union, UnionType}
    kinds = [kind for kind in get_args(hint) if kind is not NoneType] if union else [hint]
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind is datetime:
        return _TO_UTC
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind
    if kind is tuple or get_origin(kind) is tuple:
        return tuple
    return None


def _taker(indices: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """The values at ``indices``, as a sequence even when there is one."""
    if len(indices) == 1:
        (index,) = indices
        return lambda values: (values[index],)
    return itemgetter(*indices)


ANSWER_OWNER_LOCK_CLASS = 0x616E7377  # "answ"
"""The first key of the two-key advisory lock a process holds for as long as it
lives, the second being its ``AnswerOwner.key``: ``fail_orphaned`` reads
``pg_locks`` for it (classid = this, objid = the key, objsubid = 2)."""
