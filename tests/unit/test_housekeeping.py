"""Housekeeping on in-memory adapters and a fake clock: what goes, what stays,
and a round skipped while another process holds the lock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.memory import FakeClock, InMemoryExclusiveLock, InMemoryRepositories
from gemini_core.entities import NewOtpVerification, NewUser, NewUserSession, OtpPurpose
from gemini_core.housekeeping import PURGE_LOCK, Housekeeping, HousekeepingRules, Purged

RULES = HousekeepingRules(keep_codes=timedelta(days=1), keep_sessions=timedelta(days=30))


def make(
    clock: FakeClock, lock: InMemoryExclusiveLock
) -> tuple[Housekeeping, InMemoryRepositories]:
    repos = InMemoryRepositories(clock=clock)
    housekeeping = Housekeeping(
        otps=repos.otps, sessions=repos.sessions, clock=clock, lock=lock, rules=RULES
    )
    return housekeeping, repos


async def test_old_codes_and_ended_sessions_go_and_the_rest_stays() -> None:
    clock, lock = FakeClock(), InMemoryExclusiveLock()
    housekeeping, repos = make(clock, lock)
    user = await repos.users.add(NewUser(email="a@example.com", username="ann", password_hash="h"))

    def code(email: str, expires_in: timedelta) -> NewOtpVerification:
        return NewOtpVerification(
            email=email,
            purpose=OtpPurpose.EMAIL_VERIFICATION,
            code_hash="h",
            expires_at=clock.now() + expires_in,
        )

    def session(expires_in: timedelta) -> NewUserSession:
        return NewUserSession(
            user_id=user.id, refresh_token_hash="r", expires_at=clock.now() + expires_in
        )

    await repos.otps.add(code("old@example.com", timedelta(minutes=10)))
    await repos.otps.add(code("recent@example.com", timedelta(days=31, hours=12)))
    expired = await repos.sessions.add(session(timedelta(days=1)))
    revoked = await repos.sessions.add(session(timedelta(days=90)))
    await repos.sessions.revoke(revoked.id, clock.now())
    live = await repos.sessions.add(session(timedelta(days=90)))
    clock.advance(days=32)  # the old code expired 32 days ago, the recent one 12 hours ago

    # Codes are kept a day after expiry, sessions 30 days after they end.
    assert await housekeeping.purge() == Purged(codes=1, sessions=2)
    assert await repos.otps.latest("old@example.com", OtpPurpose.EMAIL_VERIFICATION) is None
    recent = await repos.otps.latest("recent@example.com", OtpPurpose.EMAIL_VERIFICATION)
    assert recent is not None
    assert await repos.sessions.get(expired.id) is None
    assert await repos.sessions.get(revoked.id) is None
    assert await repos.sessions.get(live.id) is not None
    assert await housekeeping.purge() == Purged(codes=0, sessions=0)


async def test_a_round_is_skipped_while_another_process_purges() -> None:
    clock, lock = FakeClock(), InMemoryExclusiveLock()
    housekeeping, repos = make(clock, lock)
    await repos.otps.add(
        NewOtpVerification(
            email="old@example.com",
            purpose=OtpPurpose.PASSWORD_RESET,
            code_hash="h",
            expires_at=clock.now(),
        )
    )
    clock.advance(days=2)
    lock.held.add(PURGE_LOCK)  # another process is at it
    assert await housekeeping.purge() is None
    assert await repos.otps.latest("old@example.com", OtpPurpose.PASSWORD_RESET) is not None
    lock.held.discard(PURGE_LOCK)
    assert await housekeeping.purge() == Purged(codes=1, sessions=0)


async def test_the_loop_purges_every_period_and_survives_a_failing_round() -> None:
    clock, lock = FakeClock(), InMemoryExclusiveLock()
    housekeeping, repos = make(clock, lock)
    rounds: list[float] = []
    failures = iter([RuntimeError("database down")])

    async def purge_expired(before: object) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return 0

    repos.otps.purge_expired = purge_expired  # type: ignore[method-assign]

    async def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 3:
            raise StopAsyncIteration  # ends the test's loop

    with pytest.raises(StopAsyncIteration):
        await housekeeping.run(sleep=sleep)
    assert rounds == [RULES.every_seconds] * 3


def test_codes_must_be_kept_an_hour_for_the_hourly_cap() -> None:
    clock, lock = FakeClock(), InMemoryExclusiveLock()
    repos = InMemoryRepositories(clock=clock)
    with pytest.raises(ValueError, match="hourly cap"):
        Housekeeping(
            otps=repos.otps,
            sessions=repos.sessions,
            clock=clock,
            lock=lock,
            rules=HousekeepingRules(keep_codes=timedelta(minutes=30)),
        )
