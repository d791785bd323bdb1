"""Administration: statistics, and managing other users' accounts.

Every action is written to the ``gemini.audit`` log as who did what to whom.
An admin cannot delete, deactivate or demote their own account, and no change
may leave the service without an active admin (decided atomically, so two
admins demoting each other at once cannot both succeed): nothing but a
database edit could recover from that.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, timedelta

from gemini_core.accounts import Principal
from gemini_core.entities import User, UserChanges
from gemini_core.errors import ConflictError, InvalidInputError, NotFoundError
from gemini_core.pagination import check_page_size
from gemini_core.ports import Clock, SessionRepository, StatsRepository, UserRepository
from gemini_core.validation import check_username, clean_full_name

audit_log = logging.getLogger("gemini.audit")

NEW_USER_WINDOW = timedelta(days=7)
MAX_QUOTA = 2**31 - 1
"""The largest daily quota an admin may set (either kind)."""
LAST_ADMIN = "The last active admin cannot be demoted, deactivated or deleted."


@dataclass(frozen=True, slots=True)
class UsersPage:
    items: list[User]
    total: int
    page: int
    size: int
    pages: int


@dataclass(frozen=True, slots=True)
class AccountEdit:
    """What an admin may change on an account; ``None`` leaves a field as it is
    and a blank ``full_name`` clears it. A daily quota is set to a number, or
    back to the deployment's default by its ``default_`` flag."""

    full_name: str | None = None
    username: str | None = None
    is_active: bool | None = None
    is_verified: bool | None = None
    is_admin: bool | None = None
    daily_token_quota: int | None = None
    default_daily_token_quota: bool = False
    daily_message_quota: int | None = None
    default_daily_message_quota: bool = False


class AdminService:
    def __init__(
        self,
        *,
        users: UserRepository,
        sessions: SessionRepository,
        stats: StatsRepository,
        clock: Clock,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._stats = stats
        self._clock = clock

    async def statistics(self) -> dict[str, int]:
        """The dashboard's five numbers. "Today" starts at midnight UTC; "this
        week" is the last seven days. Deleted accounts, and their chats and
        messages, are not counted."""
        now = self._clock.now().astimezone(UTC)
        counts = await self._stats.counts(
            active_since=now.replace(hour=0, minute=0, second=0, microsecond=0),
            created_since=now - NEW_USER_WINDOW,
        )
        return {
            "total_users": counts.total_users,
            "total_chats": counts.total_chats,
            "total_messages": counts.total_messages,
            "active_users_today": counts.active_users,
            "new_users_this_week": counts.new_users,
        }

    async def list_users(self, *, page: int, size: int, query: str | None) -> UsersPage:
        if page < 1:
            raise InvalidInputError("Pages start at 1.", field="page")
        check_page_size(size, field="size")
        query = (query or "").strip() or None
        found = await self._users.search(query, offset=(page - 1) * size, limit=size)
        return UsersPage(
            items=found.items,
            total=found.total,
            page=page,
            size=size,
            pages=math.ceil(found.total / size),
        )

    async def _live_user(self, user_id: int) -> User:
        user = await self._users.get(user_id)
        if user is None or user.is_deleted:
            raise NotFoundError("No such user.")
        return user

    async def _update(self, target: User, changes: UserChanges) -> User:
        """Apply ``changes``, refusing (409) any that would leave no active admin."""
        takes_away_admin = target.is_admin and (
            changes.is_admin is False
            or changes.is_active is False
            or changes.deleted_at is not None
        )
        if not takes_away_admin:
            return await self._users.update(target.id, changes)
        updated = await self._users.update_keeping_an_admin(target.id, changes)
        if updated is None:
            raise ConflictError(LAST_ADMIN)
        return updated

    async def edit_user(self, admin: Principal, user_id: int, edit: AccountEdit) -> User:
        target = await self._live_user(user_id)
        if target.id == admin.user.id and (edit.is_admin is False or edit.is_active is False):
            raise ConflictError("You cannot demote or deactivate your own account.")
        cleaned_name = None if edit.full_name is None else clean_full_name(edit.full_name)
        changes = UserChanges(
            username=None if edit.username is None else check_username(edit.username),
            full_name=cleaned_name,
            clear_full_name=edit.full_name is not None and cleaned_name is None,
            is_active=edit.is_active,
            is_verified=edit.is_verified,
            is_admin=edit.is_admin,
            daily_token_quota=_quota(edit.daily_token_quota, "daily_token_quota"),
            clear_daily_token_quota=edit.default_daily_token_quota,
            daily_message_quota=_quota(edit.daily_message_quota, "daily_message_quota"),
            clear_daily_message_quota=edit.default_daily_message_quota,
        )
        updated = await self._update(target, changes)
        revoked = 0
        if target.is_active and not updated.is_active:
            revoked = await self._sessions.revoke_all(target.id, self._clock.now())
        audit_log.info(
            "user updated",
            extra={
                "event": "admin_user_updated",
                "actor_id": admin.user.id,
                "target_id": target.id,
                "changes": _changed_fields(target, updated),
                "sessions_revoked": revoked,
            },
        )
        return updated

    async def delete_user(self, admin: Principal, user_id: int) -> None:
        """Soft delete: the row stays, sign-in is refused, every session ends."""
        target = await self._live_user(user_id)
        if target.id == admin.user.id:
            raise ConflictError("You cannot delete your own account.")
        now = self._clock.now()
        await self._update(target, UserChanges(deleted_at=now))
        revoked = await self._sessions.revoke_all(target.id, now)
        audit_log.info(
            "user deleted",
            extra={
                "event": "admin_user_deleted",
                "actor_id": admin.user.id,
                "target_id": target.id,
                "sessions_revoked": revoked,
            },
        )


def _quota(value: int | None, field: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_QUOTA:
        raise InvalidInputError(
            f"A quota is 0 to {MAX_QUOTA}, or null for the default.", field=field
        )
    return value


def _changed_fields(before: User, after: User) -> list[str]:
    names = (
        "username",
        "full_name",
        "is_active",
        "is_verified",
        "is_admin",
        "daily_token_quota",
        "daily_message_quota",
    )
    return [name for name in names if getattr(before, name) != getattr(after, name)]
