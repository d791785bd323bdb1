"""``after_stop_signal``: a stop signal the server catches also reaches us, the
server still gets it, and nothing is hooked where the server does not catch it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from web.shutdown import after_stop_signal


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """A SIGTERM handler such as granian's; yields the signals it received."""
    received: list[int] = []

    def handler(number: int, frame: FrameType | None) -> None:
        received.append(number)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_a_stop_signal_runs_the_action_once_and_still_reaches_the_server(
    server_handler: list[int],
) -> None:
    server_handler_itself = signal.getsignal(signal.SIGTERM)
    acted = asyncio.Event()
    actions: list[None] = []

    def action() -> None:
        actions.append(None)
        acted.set()

    async with after_stop_signal(action, seconds=0):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(acted.wait(), 5)
    assert server_handler == [signal.SIGTERM, signal.SIGTERM]
    assert actions == [None]
    assert signal.getsignal(signal.SIGTERM) is server_handler_itself, "handler put back"


async def test_a_signal_the_server_does_not_catch_is_left_alone() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        async with after_stop_signal(lambda: None, seconds=0):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
