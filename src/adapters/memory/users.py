"""The ``UserRepository`` port in memory."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from adapters.memory.store import StoreRepository, check_page, contains, utc, utc_or_none
from gemini_core.entities import NewUser, User, UserChanges, UserPage
from gemini_core.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = ["InMemoryUserRepository"]


def _is_active_admin(user: User) -> bool:
    return user.is_admin and user.is_active and user.deleted_at is None


class InMemoryUserRepository(StoreRepository):
    def _check_unique(self, email: str, username: str, *, except_id: int | None) -> None:
        # Email first, as PostgreSQL checks users_email_key before the username's.
        others = [u for u in self._store.users.values() if u.id != except_id]
        if any(u.email.lower() == email.lower() for u in others):
            raise ConflictError("That email is already taken.", field="email")
        if any(u.username.lower() == username.lower() for u in others):
            raise ConflictError("That username is already taken.", field="username")

    async def add(self, user: NewUser) -> User:
        self._check_unique(user.email, user.username, except_id=None)
        now = self._now()
        stored = User(
            id=self._store.next_id("users"),
            email=user.email,
            username=user.username,
            full_name=user.full_name,
            password_hash=user.password_hash,
            is_active=user.is_active,
            is_verified=user.is_verified,
            is_admin=user.is_admin,
            created_at=now,
            updated_at=now,
            last_login_at=None,
            last_seen_at=None,
            deleted_at=None,
        )
        self._store.users[stored.id] = stored
        return stored

    async def get(self, user_id: int) -> User | None:
        return self._store.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        wanted = email.lower()
        return next((u for u in self._store.users.values() if u.email.lower() == wanted), None)

    async def update(self, user_id: int, changes: UserChanges) -> User:
        user = self._store.users.get(user_id)
        if user is None:
            raise NotFoundError("No such user.")
        email = user.email if changes.email is None else changes.email
        username = user.username if changes.username is None else changes.username
        self._check_unique(email, username, except_id=user_id)
        full_name = user.full_name if changes.full_name is None else changes.full_name
        updated = replace(
            user,
            email=email,
            username=username,
            full_name=None if changes.clear_full_name else full_name,
            password_hash=(
                user.password_hash if changes.password_hash is None else changes.password_hash
            ),
            is_active=user.is_active if changes.is_active is None else changes.is_active,
            is_verified=user.is_verified if changes.is_verified is None else changes.is_verified,
            is_admin=user.is_admin if changes.is_admin is None else changes.is_admin,
            last_login_at=utc_or_none(changes.last_login_at or user.last_login_at),
            deleted_at=utc_or_none(changes.deleted_at or user.deleted_at),
            daily_token_quota=_quota(
                user.daily_token_quota, changes.daily_token_quota, changes.clear_daily_token_quota
            ),
            daily_message_quota=_quota(
                user.daily_message_quota,
                changes.daily_message_quota,
                changes.clear_daily_message_quota,
                bits=31,
            ),
            updated_at=self._now(),
        )
        self._store.users[user_id] = updated
        return updated

    async def update_keeping_an_admin(self, user_id: int, changes: UserChanges) -> User | None:
        # No await between the change, the check and the undo: one step.
        before = self._store.users.get(user_id)
        updated = await self.update(user_id, changes)
        if not any(_is_active_admin(user) for user in self._store.users.values()):
            assert before is not None
            self._store.users[user_id] = before
            return None
        return updated

    async def touch(self, user_id: int, seen_at: datetime) -> None:
        user = self._store.users.get(user_id)
        if user is None:
            return
        seen = utc(seen_at)
        if user.last_seen_at is None or seen > user.last_seen_at:
            self._store.users[user_id] = replace(user, last_seen_at=seen)

    async def search(self, query: str | None, *, offset: int, limit: int) -> UserPage:
        check_page(limit=limit, offset=offset)
        matched = [
            user
            for user in sorted(self._store.users.values(), key=lambda u: u.id)
            if user.deleted_at is None
            and (query is None or contains(user.email, query) or contains(user.username, query))
        ]
        return UserPage(items=matched[offset : offset + limit], total=len(matched))


def _quota(now: int | None, given: int | None, clear: bool, *, bits: int = 63) -> int | None:
    """A quota column after an update, refused as PostgreSQL's check and type refuse it."""
    if clear:
        return None
    if given is None:
        return now
    if not 0 <= given < 2**bits:
        raise InvalidInputError("A value is out of the allowed range.")
    return given
