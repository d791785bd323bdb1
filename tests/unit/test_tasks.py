"""``stop``: cancelling background tasks must end them, even one that swallows
a cancellation, as some client libraries do mid-call."""

from __future__ import annotations

import asyncio

from gemini_core.tasks import stop


async def test_stop_ends_a_task_that_swallows_its_first_cancellation() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # carries on as if nothing happened
        await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    await stop(task, again_after=0.01)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_stop_waits_for_every_task_and_keeps_quiet_about_their_endings() -> None:
    async def fails() -> None:
        raise RuntimeError("ended badly")

    async def waits() -> None:
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    failed, waiting = loop.create_task(fails()), loop.create_task(waits())
    await asyncio.sleep(0)
    await stop(failed, waiting)
    assert isinstance(failed.exception(), RuntimeError)
    assert waiting.cancelled()
    await stop()  # nothing to stop
