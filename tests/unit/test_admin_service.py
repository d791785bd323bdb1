from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.clock import FakeClock
from adapters.memory import InMemoryRepositories
from gemini_core.admin import AdminService
from gemini_core.entities import NewUser, UserChanges


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
