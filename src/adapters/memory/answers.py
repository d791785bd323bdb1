"""The ``AnswerOwner`` port within one process: a key the shared store counts
as live (``InMemoryStore.live_owners``) from ``start`` to ``aclose``. Across
processes: ``adapters.postgres.owners``."""

from __future__ import annotations

from adapters.memory.store import InMemoryStore

__all__ = ["InMemoryAnswerOwner"]


class InMemoryAnswerOwner:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self._key: int | None = None

    @property
    def key(self) -> int:
        if self._key is None:
            raise RuntimeError("the answer owner has not started")
        return self._key

    async def start(self) -> None:
        if self._key is not None:
            raise RuntimeError("the answer owner has already started")
        # From the store's own sequence: never a key a dead owner held before.
        self._key = self._store.next_id("answer_owners")
        self._store.live_owners.add(self._key)

    async def aclose(self) -> None:
        if self._key is not None:
            self._store.live_owners.discard(self._key)
