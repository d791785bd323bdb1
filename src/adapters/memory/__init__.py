"""Every port in this process's memory: for unit tests, for running the web
layer without a database, and (the rate limiter and the cache) for a single
process without Redis. One module per concept, as in ``adapters.postgres``.

The repositories behave like the PostgreSQL adapters in everything a caller
can see (ordering, case-insensitive emails and usernames, conflicts and the
field they name, scoping by user, which timestamps change), and the contract
suite in ``tests/integration/test_repositories.py`` runs against both to keep
it so. All the repositories of one ``InMemoryStore`` share its tables
(``store.py``).

The other fakes are here too: a clock tests move by hand, a mailer and a
telemetry sink that record, a password hasher cheap enough for tests, file
storage in memory, and a lock for one process.
"""

from __future__ import annotations

from adapters.memory.answers import InMemoryAnswerOwner
from adapters.memory.cache import InMemoryCache
from adapters.memory.chats import InMemoryChatRepository, InMemoryMessageRepository
from adapters.memory.clock import FakeClock
from adapters.memory.codes import InMemoryOtpRepository
from adapters.memory.files import InMemoryFileUploadRepository
from adapters.memory.locks import InMemoryExclusiveLock
from adapters.memory.mail import RecordingMailer
from adapters.memory.passwords import FastPasswordHasher
from adapters.memory.probe import InMemoryDatabaseProbe
from adapters.memory.ratelimit import InMemoryRateLimiter
from adapters.memory.repositories import InMemoryRepositories
from adapters.memory.sessions import InMemorySessionRepository
from adapters.memory.signals import InMemoryAnswerSignals, InMemorySignalHub
from adapters.memory.stats import InMemoryStatsRepository
from adapters.memory.storage import memory_file_storage
from adapters.memory.store import InMemoryStore
from adapters.memory.telemetry import RecordingTelemetry
from adapters.memory.usage import InMemoryUsageRepository
from adapters.memory.users import InMemoryUserRepository

__all__ = [
    "FakeClock",
    "FastPasswordHasher",
    "InMemoryAnswerOwner",
    "InMemoryAnswerSignals",
    "InMemoryCache",
    "InMemoryChatRepository",
    "InMemoryDatabaseProbe",
    "InMemoryExclusiveLock",
    "InMemoryFileUploadRepository",
    "InMemoryMessageRepository",
    "InMemoryOtpRepository",
    "InMemoryRateLimiter",
    "InMemoryRepositories",
    "InMemorySessionRepository",
    "InMemorySignalHub",
    "InMemoryStatsRepository",
    "InMemoryStore",
    "InMemoryUsageRepository",
    "InMemoryUserRepository",
    "RecordingMailer",
    "RecordingTelemetry",
    "memory_file_storage",
]
