"""The admin dashboard's counts in memory."""

from __future__ import annotations

from datetime import datetime

from adapters.memory.store import StoreRepository
from gemini_core.entities import User
from gemini_core.ports import Counts

__all__ = ["InMemoryStatsRepository"]


class InMemoryStatsRepository(StoreRepository):
    """The ``StatsRepository`` port over the shared store."""

    async def counts(self, *, active_since: datetime, created_since: datetime) -> Counts:
        live = {u.id: u for u in self._store.users.values() if u.deleted_at is None}
        chats = [c for c in self._store.chats.values() if c.user_id in live]

        def active(user: User) -> bool:
            moments = [m for m in (user.last_login_at, user.last_seen_at) if m is not None]
            return bool(moments) and max(moments) >= active_since

        return Counts(
            total_users=len(live),
            total_chats=len(chats),
            total_messages=sum(c.message_count for c in chats),
            active_users=sum(1 for u in live.values() if active(u)),
            new_users=sum(1 for u in live.values() if u.created_at >= created_since),
        )
