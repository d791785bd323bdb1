"""A database probe for the in-memory services, which have no database."""

from __future__ import annotations

from gemini_core.ports import DatabaseStatus

__all__ = ["InMemoryDatabaseProbe"]


class InMemoryDatabaseProbe:
    """The ``DatabaseProbe`` port with no database: healthy until told otherwise."""

    def __init__(self, *, healthy: bool = True) -> None:
        self.healthy = healthy

    async def check(self) -> DatabaseStatus:
        return DatabaseStatus(healthy=self.healthy, response_time_ms=0.0, pool={})
