"""Pages: their size, how one is cut, and opaque cursors.

A page is fetched with one item more than it holds: the extra item, if it
comes, says that another page follows, with no count of the whole list.

A cursor is the position of the last item of a page, in the list's order,
encoded as URL-safe base64 of a small JSON array. Opaque so clients do not
build them; not secret, since a changed cursor only moves within the caller's
own data. A cursor that does not decode is the caller's mistake:
``InvalidInputError(field="cursor")``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from gemini_core.entities import ChatCursor
from gemini_core.errors import InvalidInputError

MAX_PAGE_SIZE = 100
"""The most items one page may hold, in every list."""

_BAD_CURSOR = "The cursor is not one this service issued."

T = TypeVar("T")


def check_page_size(size: int, *, field: str = "limit") -> None:
    """``InvalidInputError`` naming ``field`` unless ``size`` is 1 to ``MAX_PAGE_SIZE``."""
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"{field} must be 1 to {MAX_PAGE_SIZE}.", field=field)


async def fetch_page(
    fetch: Callable[[int], Awaitable[list[T]]],
    size: int,
    cursor_of: Callable[[T], str],
    *,
    backwards: bool = False,
) -> tuple[list[T], str | None]:
    """A page of at most ``size`` (already checked) items, and the cursor of
    the next page when there is one.

    ``fetch(n)`` returns the first ``n`` items from the current position. The
    next cursor is that of the page's last item; ``backwards``, where the
    newest items come oldest first (a chat's messages), that of its first.
    """
    found = await fetch(size + 1)
    if len(found) <= size:
        return found, None
    if backwards:
        items = found[-size:]
        return items, cursor_of(items[0])
    items = found[:size]
    return items, cursor_of(items[-1])


def _encode(values: list[object]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(cursor: str) -> list[object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        raise InvalidInputError(_BAD_CURSOR, field="cursor") from exc
    if not isinstance(values, list):
        raise InvalidInputError(_BAD_CURSOR, field="cursor")
    return values


def encode_chat_cursor(position: ChatCursor) -> str:
    return _encode([position.pinned, position.updated_at.isoformat(), position.id])


def decode_chat_cursor(cursor: str) -> ChatCursor:
    values = _decode(cursor)
    match values:
        case [bool(pinned), str(updated_at), int(chat_id)] if (
            not isinstance(chat_id, bool) and chat_id > 0
        ):
            pass
        case _:
            raise InvalidInputError(_BAD_CURSOR, field="cursor")
    try:
        moment = datetime.fromisoformat(updated_at)
    except ValueError as exc:
        raise InvalidInputError(_BAD_CURSOR, field="cursor") from exc
    if moment.tzinfo is None:
        raise InvalidInputError(_BAD_CURSOR, field="cursor")
    return ChatCursor(pinned=pinned, updated_at=moment.astimezone(UTC), id=chat_id)


def encode_id_cursor(item_id: int) -> str:
    """For lists ordered by id alone (files)."""
    return _encode([item_id])


def decode_id_cursor(cursor: str) -> int:
    match _decode(cursor):
        case [int(item_id)] if not isinstance(item_id, bool) and item_id > 0:
            return item_id
        case _:
            raise InvalidInputError(_BAD_CURSOR, field="cursor")
