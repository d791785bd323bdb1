"""Every in-memory repository over one shared store."""

from __future__ import annotations

from adapters.memory.chats import InMemoryChatRepository, InMemoryMessageRepository
from adapters.memory.codes import InMemoryOtpRepository
from adapters.memory.files import InMemoryFileUploadRepository
from adapters.memory.sessions import InMemorySessionRepository
from adapters.memory.stats import InMemoryStatsRepository
from adapters.memory.store import InMemoryStore
from adapters.memory.usage import InMemoryUsageRepository
from adapters.memory.users import InMemoryUserRepository
from gemini_core.ports import Clock

__all__ = ["InMemoryRepositories"]


class InMemoryRepositories:
    """Every repository over one shared store, as the composition root wants them."""

    def __init__(self, *, clock: Clock, store: InMemoryStore | None = None) -> None:
        self.store = InMemoryStore() if store is None else store
        self.users = InMemoryUserRepository(self.store, clock=clock)
        self.chats = InMemoryChatRepository(self.store, clock=clock)
        self.messages = InMemoryMessageRepository(self.store, clock=clock)
        self.files = InMemoryFileUploadRepository(self.store, clock=clock)
        self.otps = InMemoryOtpRepository(self.store, clock=clock)
        self.sessions = InMemorySessionRepository(self.store, clock=clock)
        self.stats = InMemoryStatsRepository(self.store, clock=clock)
        self.usage = InMemoryUsageRepository(self.store, clock=clock)
