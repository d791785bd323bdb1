"""Work that must outlive the request that started it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
