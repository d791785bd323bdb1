"""The in-memory ``AnswerSignals``: several instances on one hub behave as the
processes of one deployment. (The contract they share with PostgreSQL and
Redis runs in ``tests/integration/test_signals.py``.)"""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.memory import InMemoryAnswerSignals, InMemorySignalHub
from gemini_core.errors import UnavailableError
from gemini_core.ports import MAX_SIGNAL_BYTES


async def delivered() -> None:
    """Let the loop run what ``send`` queued."""
    await asyncio.sleep(0)


async def started(hub: InMemorySignalHub) -> tuple[InMemoryAnswerSignals, list[str]]:
    signals = InMemoryAnswerSignals(hub)
    inbox: list[str] = []
    await signals.start(inbox.append)
    return signals, inbox


async def test_every_started_process_receives_every_message_in_order_the_senders_too() -> None:
    hub = InMemorySignalHub()
    (first, first_inbox), (second, second_inbox) = await started(hub), await started(hub)
    await first.send("a")
    await second.send("b")
    await first.send("c")
    await delivered()
    assert first_inbox == second_inbox == ["a", "b", "c"]
    assert list(hub.sent) == ["a", "b", "c"]


async def test_messages_arrive_later_in_the_event_loop_never_inside_send() -> None:
    hub = InMemorySignalHub()
    signals, inbox = await started(hub)
    await signals.send("hello")
    assert inbox == []
    await delivered()
    assert inbox == ["hello"]


async def test_a_process_not_started_sends_but_does_not_receive() -> None:
    hub = InMemorySignalHub()
    _, inbox = await started(hub)
    silent = InMemoryAnswerSignals(hub)
    await silent.send("from a sender only")
    await delivered()
    assert inbox == ["from a sender only"]


async def test_hubs_are_apart() -> None:
    one, other = InMemorySignalHub(), InMemorySignalHub()
    sender, own = await started(one)
    _, elsewhere = await started(other)
    await sender.send("hello")
    await delivered()
    assert (own, elsewhere) == (["hello"], [])


async def test_a_closed_process_receives_nothing_more_not_even_what_was_queued_nor_sends() -> None:
    hub = InMemorySignalHub()
    (leaving, leaving_inbox), (staying, staying_inbox) = await started(hub), await started(hub)
    await staying.send("queued")
    await leaving.aclose()
    await staying.send("after")
    await delivered()
    assert leaving_inbox == []
    assert staying_inbox == ["queued", "after"]
    await leaving.aclose()  # twice is harmless
    with pytest.raises(UnavailableError):
        await leaving.send("from beyond")


async def test_a_hub_that_is_down_refuses_to_send() -> None:
    hub = InMemorySignalHub()
    signals, inbox = await started(hub)
    hub.down = True
    with pytest.raises(UnavailableError):
        await signals.send("lost")
    hub.down = False
    await signals.send("sent")
    await delivered()
    assert inbox == ["sent"]
    assert list(hub.sent) == ["sent"]


async def test_a_message_takes_at_most_the_limit_and_no_nul() -> None:
    hub = InMemorySignalHub()
    signals, inbox = await started(hub)
    largest = "€" * (MAX_SIGNAL_BYTES // 3) + "a" * (MAX_SIGNAL_BYTES % 3)
    assert len(largest.encode()) == MAX_SIGNAL_BYTES
    await signals.send(largest)
    with pytest.raises(ValueError, match="bytes"):
        await signals.send(largest + "a")
    with pytest.raises(ValueError, match="NUL"):
        await signals.send("\x00")
    await delivered()
    assert inbox == [largest]


async def test_a_failing_receiver_is_logged_and_the_others_still_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = InMemorySignalHub()

    def broken(message: str) -> None:
        raise RuntimeError("the receiver broke")

    await InMemoryAnswerSignals(hub).start(broken)
    sender, inbox = await started(hub)
    with caplog.at_level(logging.ERROR):
        await sender.send("one")
        await sender.send("two")
        await delivered()
    assert inbox == ["one", "two"]
    assert sum("receiver of answer signals failed" in r.getMessage() for r in caplog.records) == 2


async def test_starting_twice_is_a_mistake() -> None:
    signals, _ = await started(InMemorySignalHub())
    with pytest.raises(RuntimeError):
        await signals.start(lambda message: None)
