"""The ``SessionRepository`` port (refresh-token sessions) in memory."""

from __future__ import annotations

import builtins
from dataclasses import replace
from datetime import datetime

from adapters.memory.store import StoreRepository, utc
from gemini_core.entities import NewUserSession, User, UserSession

__all__ = ["InMemorySessionRepository"]


class InMemorySessionRepository(StoreRepository):
    def _live(self, session_id: int, now: datetime) -> UserSession | None:
        session = self._store.sessions.get(session_id)
        return session if session is not None and session.is_live(now) else None

    async def add(self, session: NewUserSession) -> UserSession:
        self._store.require_user(session.user_id)
        now = self._now()
        stored = UserSession(
            id=self._store.next_id("sessions"),
            user_id=session.user_id,
            refresh_token_hash=session.refresh_token_hash,
            user_agent=session.user_agent,
            ip=session.ip,
            created_at=now,
            last_used_at=now,
            expires_at=utc(session.expires_at),
            revoked_at=None,
        )
        self._store.sessions[stored.id] = stored
        return stored

    async def get(self, session_id: int) -> UserSession | None:
        return self._store.sessions.get(session_id)

    async def get_with_user(self, session_id: int) -> tuple[UserSession, User] | None:
        session = self._store.sessions.get(session_id)
        if session is None:
            return None
        return session, self._store.users[session.user_id]

    async def list_live(self, user_id: int, now: datetime) -> builtins.list[UserSession]:
        live = [s for s in self._store.sessions.values() if s.user_id == user_id and s.is_live(now)]
        return sorted(live, key=lambda s: s.id, reverse=True)

    async def rotate(
        self, session_id: int, *, expected_hash: str, new_hash: str, now: datetime
    ) -> bool:
        session = self._live(session_id, now)
        if session is None or session.refresh_token_hash != expected_hash:
            return False
        self._store.sessions[session_id] = replace(
            session, refresh_token_hash=new_hash, last_used_at=utc(now)
        )
        return True

    async def touch(self, session_id: int, now: datetime) -> None:
        session = self._store.sessions.get(session_id)
        if session is not None and now > session.last_used_at:
            self._store.sessions[session_id] = replace(session, last_used_at=utc(now))

    async def revoke(self, session_id: int, now: datetime) -> bool:
        session = self._live(session_id, now)
        if session is None:
            return False
        self._store.sessions[session_id] = replace(session, revoked_at=utc(now))
        return True

    async def revoke_all(self, user_id: int, now: datetime, *, except_id: int | None = None) -> int:
        doomed = [
            s
            for s in self._store.sessions.values()
            if s.user_id == user_id and s.id != except_id and s.is_live(now)
        ]
        for session in doomed:
            self._store.sessions[session.id] = replace(session, revoked_at=utc(now))
        return len(doomed)

    async def purge_ended(self, before: datetime) -> int:
        ended = [
            s.id
            for s in self._store.sessions.values()
            if s.expires_at < before or (s.revoked_at is not None and s.revoked_at < before)
        ]
        for session_id in ended:
            del self._store.sessions[session_id]
        return len(ended)
