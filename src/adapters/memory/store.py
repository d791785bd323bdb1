"""The shared store: the tables every in-memory repository reads and writes.

All the repositories of one ``InMemoryStore`` share its tables, as the
PostgreSQL ones share a database: adding a message counts it on its chat,
deleting a chat deletes its messages. Every method body is synchronous (no
``await`` inside), so on one event loop each call is atomic, as each
PostgreSQL statement is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from gemini_core.entities import Chat, FileUpload, Message, OtpVerification, User, UserSession
from gemini_core.errors import InvalidInputError, NotFoundError
from gemini_core.ports import Clock

__all__ = ["DayCount", "InMemoryStore"]


@dataclass
class DayCount:
    """One row of the usage rollup."""

    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class InMemoryStore:
    """The tables, keyed by id, and one id sequence per table (ids start at 1)."""

    users: dict[int, User] = field(default_factory=dict)
    chats: dict[int, Chat] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    files: dict[int, FileUpload] = field(default_factory=dict)
    otps: dict[int, OtpVerification] = field(default_factory=dict)
    sessions: dict[int, UserSession] = field(default_factory=dict)
    live_owners: set[int] = field(default_factory=set)
    """The keys of the live ``AnswerOwner``s (what PostgreSQL reads in
    ``pg_locks``); a test may add or remove one to play a process."""
    usage_days: dict[tuple[int, date], DayCount] = field(default_factory=dict)
    """The usage rollup by (user id, UTC day)."""
    answer_days: dict[int, date] = field(default_factory=dict)
    """The day each answer counts on (``messages.usage_day``), by its id."""
    _sequences: dict[str, Iterator[int]] = field(default_factory=dict)

    def next_id(self, table: str) -> int:
        return next(self._sequences.setdefault(table, itertools.count(1)))

    def require_user(self, user_id: int) -> None:
        """What the foreign keys to ``users`` enforce."""
        if user_id not in self.users:
            raise NotFoundError("A record this refers to does not exist.")


class StoreRepository:
    """Holds the shared store (a private one when none is given) and the clock."""

    def __init__(self, store: InMemoryStore | None = None, *, clock: Clock) -> None:
        self._store = InMemoryStore() if store is None else store
        self._clock = clock

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def check_page(*, limit: int, offset: int = 0) -> None:
    # PostgreSQL refuses a negative LIMIT or OFFSET; so do we.
    if limit < 0 or offset < 0:
        raise InvalidInputError("A value is out of the allowed range.")


def check_bigint(*values: int | None) -> None:
    """PostgreSQL refuses an id beyond a bigint's range; so do we."""
    if any(v is not None and not -(2**63) <= v < 2**63 for v in values):
        raise InvalidInputError("A value is out of the allowed range.")


def contains(haystack: str | None, needle: str) -> bool:
    return haystack is not None and needle.lower() in haystack.lower()
