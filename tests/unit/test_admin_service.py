from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import FakeClock, InMemoryRepositories
from gemini_core.accounts import Principal
from gemini_core.admin import AccountEdit, AdminService
from gemini_core.entities import NewUser, NewUserSession, UserChanges
from gemini_core.errors import ConflictError


async def test_today_starts_at_midnight_utc_and_the_week_is_seven_days() -> None:
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    repos = InMemoryRepositories(clock=clock)
    admin = AdminService(users=repos.users, sessions=repos.sessions, stats=repos.stats, clock=clock)

    clock.advance(days=-8)
    old = await repos.users.add(NewUser(email="old@x.io", username="old", password_hash="h"))
    clock.advance(days=8)
    late = await repos.users.add(NewUser(email="late@x.io", username="late", password_hash="h"))
    await repos.users.touch(old.id, clock.now() - timedelta(minutes=31))  # 23:59 yesterday
    await repos.users.update(late.id, UserChanges(last_login_at=clock.now()))

    stats = await admin.statistics()
    assert stats["total_users"] == 2
    assert stats["active_users_today"] == 1
    assert stats["new_users_this_week"] == 1


async def test_no_change_leaves_the_service_without_an_active_admin() -> None:
    """Serially an admin can only lose the race through a stale principal: here
    root was demoted directly after authenticating, and then tries to demote,
    deactivate or delete the only other admin."""
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    repos = InMemoryRepositories(clock=clock)
    admin = AdminService(users=repos.users, sessions=repos.sessions, stats=repos.stats, clock=clock)
    root = await repos.users.add(
        NewUser(email="root@x.io", username="root", password_hash="h", is_admin=True)
    )
    ann = await repos.users.add(
        NewUser(email="ann@x.io", username="ann", password_hash="h", is_admin=True)
    )
    session = await repos.sessions.add(
        NewUserSession(user_id=root.id, refresh_token_hash="r", expires_at=clock.now())
    )
    stale = Principal(user=root, session=session)
    await repos.users.update(root.id, UserChanges(is_admin=False))

    for edit in (AccountEdit(is_admin=False), AccountEdit(is_active=False)):
        with pytest.raises(ConflictError, match="last active admin"):
            await admin.edit_user(stale, ann.id, edit)
    with pytest.raises(ConflictError, match="last active admin"):
        await admin.delete_user(stale, ann.id)
    assert await repos.users.get(ann.id) == ann
    # Changes that take no admin away still go through.
    renamed = await admin.edit_user(stale, ann.id, AccountEdit(full_name="Ann"))
    assert renamed.full_name == "Ann"
    # With another admin left, demotion is fine.
    await repos.users.update(root.id, UserChanges(is_admin=True))
    demoted = await admin.edit_user(stale, ann.id, AccountEdit(is_admin=False))
    assert demoted.is_admin is False
