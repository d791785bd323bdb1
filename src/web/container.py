"""What a request handler may use: the core's services, the settings, the
version; and the slot the application keeps them in."""

from __future__ import annotations

from dataclasses import dataclass

from gemini_core.accounts import AccountService
from gemini_core.admin import AdminService
from gemini_core.chats import ChatService
from gemini_core.files import UploadService
from gemini_core.health import HealthService
from gemini_core.ports import Clock, RateLimiter
from gemini_core.usage import UsageService
from web.settings import Settings


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    version: str
    clock: Clock
    accounts: AccountService
    chats: ChatService
    files: UploadService
    admin: AdminService
    usage: UsageService
    health: HealthService
    rate_limiter: RateLimiter


class ContainerSlot:
    """Holds the container once the application's lifespan has built it (the
    services need an open database, so they exist only from start-up on).
    The middleware and the dependency provider are handed the slot when the
    application is made, instead of looking the container up on the app."""

    def __init__(self, container: Container | None = None) -> None:
        self._container = container

    def fill(self, container: Container | None) -> None:
        self._container = container

    def get(self) -> Container:
        if self._container is None:
            raise RuntimeError("the application has not started (no container yet)")
        return self._container
