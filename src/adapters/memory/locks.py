"""The ``ExclusiveLock`` port within one process, for the in-memory services
and tests. Across processes: ``adapters.postgres.locks``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class InMemoryExclusiveLock:
    def __init__(self) -> None:
        self.held: set[str] = set()
        """The names held right now; a test may add one to play another holder."""

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        if name in self.held:
            yield False
            return
        self.held.add(name)
        try:
            yield True
        finally:
            self.held.discard(name)
