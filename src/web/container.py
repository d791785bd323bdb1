"""The typed bag of everything a request may need, built by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from gemini_core.accounts import AccountService
from gemini_core.admin import AdminService
from gemini_core.chats import ChatService
from gemini_core.files import UploadService
from gemini_core.health import HealthService
from gemini_core.ports import (
    Cache,
    ChatRepository,
    Clock,
    DatabaseProbe,
    FileUploadRepository,
    MessageRepository,
    OtpRepository,
    RateLimiter,
    SessionRepository,
    UserRepository,
)
from web.settings import Settings


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    clock: Clock
    database: DatabaseProbe
    users: UserRepository
    chats: ChatRepository
    messages: MessageRepository
    files: FileUploadRepository
    otps: OtpRepository
    sessions: SessionRepository
    rate_limiter: RateLimiter
    cache: Cache
    health: HealthService
    accounts: AccountService
    chat: ChatService
    uploads: UploadService
    admin: AdminService
    version: str
