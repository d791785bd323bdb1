"""The PostgreSQL repositories, one import away; each lives with its concept."""

from __future__ import annotations

from adapters.postgres.auth import PostgresOtpRepository, PostgresSessionRepository
from adapters.postgres.chats import PostgresChatRepository, PostgresMessageRepository
from adapters.postgres.files import PostgresFileUploadRepository
from adapters.postgres.stats import PostgresStatsRepository
from adapters.postgres.users import PostgresUserRepository

__all__ = [
    "PostgresChatRepository",
    "PostgresFileUploadRepository",
    "PostgresMessageRepository",
    "PostgresOtpRepository",
    "PostgresSessionRepository",
    "PostgresStatsRepository",
    "PostgresUserRepository",
]
