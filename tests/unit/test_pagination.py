from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_core.entities import ChatCursor
from gemini_core.errors import InvalidInputError
from gemini_core.pagination import (
    MAX_PAGE_SIZE,
    check_page_size,
    decode_chat_cursor,
    decode_id_cursor,
    encode_chat_cursor,
    encode_id_cursor,
    fetch_page,
)

positions = st.builds(
    ChatCursor,
    pinned=st.booleans(),
    updated_at=st.datetimes(timezones=st.just(UTC)),
    id=st.integers(min_value=1, max_value=2**63 - 1),
)


@given(positions)
def test_chat_cursors_round_trip(position: ChatCursor) -> None:
    cursor = encode_chat_cursor(position)
    assert cursor.isascii()
    assert "=" not in cursor
    assert decode_chat_cursor(cursor) == position


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_id_cursors_round_trip(item_id: int) -> None:
    assert decode_id_cursor(encode_id_cursor(item_id)) == item_id


@given(st.text())
def test_any_text_is_a_cursor_or_a_clear_refusal(text: str) -> None:
    for decode in (decode_chat_cursor, decode_id_cursor):
        try:
            decode(text)
        except InvalidInputError as exc:
            field = exc.field
        else:
            field = "cursor"
        assert field == "cursor"


@pytest.mark.parametrize(
    "values",
    [
        "[]",
        '{"a":1}',
        '[true,"2026-01-01T00:00:00+00:00",0]',
        '[true,"2026-01-01T00:00:00",5]',
        '[1,"2026-01-01T00:00:00+00:00",5]',
        '[true,"yesterday",5]',
        '[true,"2026-01-01T00:00:00+00:00",5.5]',
    ],
)
def test_well_formed_but_wrong_chat_cursors_are_refused(values: str) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(values.encode()).decode()
    with pytest.raises(InvalidInputError):
        decode_chat_cursor(cursor)


def test_an_id_cursor_is_not_a_boolean() -> None:
    import base64

    with pytest.raises(InvalidInputError):
        decode_id_cursor(base64.urlsafe_b64encode(b"[true]").decode())


def test_positions_in_other_zones_come_back_in_utc() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=5)))
    decoded = decode_chat_cursor(encode_chat_cursor(ChatCursor(True, moment, 3)))
    assert decoded.updated_at == moment
    assert decoded.updated_at.tzinfo == UTC


@pytest.mark.parametrize("size", [0, -1, MAX_PAGE_SIZE + 1])
def test_a_page_size_out_of_range_is_refused_naming_its_field(size: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_page_size(size, field="size")
    assert caught.value.field == "size"


@pytest.mark.parametrize("size", [1, MAX_PAGE_SIZE])
def test_page_sizes_up_to_the_maximum_are_allowed(size: int) -> None:
    check_page_size(size)


class _Items:
    """A list read from the start, recording how many items each read asked for."""

    def __init__(self, count: int) -> None:
        self.items = list(range(count))
        self.asked: list[int] = []

    async def first(self, n: int) -> list[int]:
        self.asked.append(n)
        return self.items[:n]


async def test_a_page_asks_for_one_more_item_than_it_holds() -> None:
    source = _Items(10)
    items, cursor = await fetch_page(source.first, 3, str)
    assert source.asked == [4]
    assert items == [0, 1, 2]
    assert cursor == "2"


@pytest.mark.parametrize("available", [0, 2, 3])
async def test_the_last_page_has_no_next_cursor(available: int) -> None:
    items, cursor = await fetch_page(_Items(available).first, 3, str)
    assert items == list(range(available))
    assert cursor is None


async def test_a_page_read_backwards_drops_its_oldest_item_and_points_before_the_rest() -> None:
    async def newest_oldest_first(n: int) -> list[int]:
        return [6, 7, 8, 9][-n:]

    items, cursor = await fetch_page(newest_oldest_first, 3, str, backwards=True)
    assert items == [7, 8, 9]
    assert cursor == "7"
