"""Work that must outlive the request that started it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")

STOP_AGAIN_SECONDS = 0.5
"""How often ``stop`` asks a task that has not ended to cancel again."""


async def stop(*tasks: asyncio.Task[Any], again_after: float = STOP_AGAIN_SECONDS) -> None:
    """Cancel ``tasks`` and wait until every one has ended, whatever it ended with.

    A task can swallow a cancellation (a library that catches it mid-call and
    carries on), and then one ``cancel`` would leave the caller waiting
    forever; so a task still running after ``again_after`` seconds is
    cancelled again, until it ends.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an ending is not worth a warning at exit


class TaskKeeper:
    """Work that must outlive the request that started it (stores, titles).

    Holding the tasks keeps them from being garbage-collected mid-way; a
    failure is logged, never raised at anyone; ``close`` waits for them.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background work failed", exc_info=exc)

    async def settle(self) -> None:
        """Wait until no work is left, including work started meanwhile."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, timeout_seconds: float) -> None:
        """Give the work ``timeout_seconds`` to finish, then cancel what is left."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.settle()
        except TimeoutError:
            await stop(*self._tasks)
