"""Wire shapes shared by several controllers."""

from __future__ import annotations

from datetime import datetime

import msgspec

from gemini_core.entities import User


class UserOut(msgspec.Struct):
    """The contract's User object; the password hash never leaves the server."""

    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    is_verified: bool
    is_admin: bool
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            full_name=user.full_name,
            is_active=user.is_active,
            is_verified=user.is_verified,
            is_admin=user.is_admin,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )
