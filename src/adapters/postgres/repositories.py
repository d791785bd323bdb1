"""The PostgreSQL repositories, one import away; each lives with its concept."""

from __future__ import annotations

from adapters.postgres.chats import PostgresChatRepository, PostgresMessageRepository
from adapters.postgres.codes import PostgresOtpRepository
from adapters.postgres.files import PostgresFileUploadRepository
from adapters.postgres.sessions import PostgresSessionRepository
from adapters.postgres.stats import PostgresStatsRepository
from adapters.postgres.usage import PostgresUsageRepository
from adapters.postgres.users import PostgresUserRepository

__all__ = [
    "PostgresChatRepository",
    "PostgresFileUploadRepository",
    "PostgresMessageRepository",
    "PostgresOtpRepository",
    "PostgresSessionRepository",
    "PostgresStatsRepository",
    "PostgresUsageRepository",
    "PostgresUserRepository",
]
