"""The account use cases on in-memory adapters, with time moved by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from adapters.memory import (
    FakeClock,
    FastPasswordHasher,
    InMemoryRepositories,
    RecordingMailer,
    RecordingTelemetry,
)
from adapters.passwords import Argon2PasswordHasher
from adapters.tokens import JwtTokenCodec
from gemini_core.accounts import AccountService, Client, Registration, SessionRules
from gemini_core.codes import CodeRules, OneTimeCodes
from gemini_core.entities import OtpPurpose, UserChanges
from gemini_core.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    TooManyRequestsError,
    UnavailableError,
    VerificationFailedError,
)

VERIFY = OtpPurpose.EMAIL_VERIFICATION
RESET = OtpPurpose.PASSWORD_RESET
PASSWORD = "correct horse battery"
CLIENT = Client(user_agent="test", ip="127.0.0.1")


@dataclass
class World:
    clock: FakeClock
    repos: InMemoryRepositories
    mailer: RecordingMailer
    accounts: AccountService

    async def register(self, email: str = "ann@example.com", username: str = "ann") -> object:
        await self.accounts.send_code(email, VERIFY)
        code = self.mailer.last_code(email)
        return await self.accounts.register(
            email, code, Registration(email=email, username=username, password=PASSWORD), CLIENT
        )


def make_world(hasher: Argon2PasswordHasher | None = None, **rules: int) -> World:
    clock = FakeClock()
    repos = InMemoryRepositories(clock=clock)
    mailer = RecordingMailer()
    codes = OneTimeCodes(
        otps=repos.otps, mailer=mailer, clock=clock, key=b"k" * 32, rules=CodeRules(**rules)
    )
    accounts = AccountService(
        users=repos.users,
        sessions=repos.sessions,
        codes=codes,
        hasher=hasher or FastPasswordHasher(),
        tokens=JwtTokenCodec(secret_key="s" * 40),
        clock=clock,
        rules=SessionRules(),
        telemetry=RecordingTelemetry(),
    )
    return World(clock=clock, repos=repos, mailer=mailer, accounts=accounts)


@pytest.fixture
def world() -> World:
    return make_world()


async def test_a_code_expires_after_its_lifetime(world: World) -> None:
    await world.accounts.send_code("ann@example.com", VERIFY)
    code = world.mailer.last_code("ann@example.com")
    world.clock.advance(seconds=600)
    with pytest.raises(VerificationFailedError):
        await world.accounts.register(
            "ann@example.com",
            code,
            Registration(email="ann@example.com", username="ann", password=PASSWORD),
            CLIENT,
        )


async def test_a_new_code_replaces_the_old_one(world: World) -> None:
    await world.accounts.send_code("ann@example.com", VERIFY)
    old = world.mailer.last_code("ann@example.com")
    world.clock.advance(seconds=60)
    await world.accounts.send_code("ann@example.com", VERIFY)
    new = world.mailer.last_code("ann@example.com")
    registration = Registration(email="ann@example.com", username="ann", password=PASSWORD)
    if old != new:
        with pytest.raises(VerificationFailedError):
            await world.accounts.register("ann@example.com", old, registration, CLIENT)
    assert await world.accounts.register("ann@example.com", new, registration, CLIENT)


async def test_the_cooldown_and_the_hourly_cap_follow_the_clock() -> None:
    world = make_world(resend_cooldown_seconds=60, max_per_hour=3)
    send = world.accounts.send_code
    await send("ann@example.com", VERIFY)
    world.clock.advance(seconds=20)
    with pytest.raises(TooManyRequestsError) as cooldown:
        await send("ann@example.com", VERIFY)
    assert cooldown.value.retry_after == 40
    # The cooldown is the address's, whatever the code is for.
    with pytest.raises(TooManyRequestsError):
        await send("ANN@example.com", RESET)
    world.clock.advance(seconds=40)
    await send("ann@example.com", VERIFY)
    world.clock.advance(seconds=60)
    await send("ann@example.com", RESET)
    world.clock.advance(seconds=60)
    with pytest.raises(TooManyRequestsError) as capped:
        await send("ann@example.com", VERIFY)
    # Three codes at t=0, 60 and 120 s; at t=180 s the first leaves the hour at t=3600 s.
    assert capped.value.retry_after == 3600 - 180
    world.clock.advance(seconds=3600 - 180)
    await send("ann@example.com", VERIFY)


async def test_a_mail_that_cannot_be_sent_leaves_no_usable_code(world: World) -> None:
    world.mailer.fail_with = UnavailableError("mail server down")
    with pytest.raises(UnavailableError):
        await world.accounts.send_code("ann@example.com", VERIFY)
    assert await world.repos.otps.latest("ann@example.com", VERIFY) is None
    world.mailer.fail_with = None
    await world.accounts.send_code("ann@example.com", VERIFY)  # no cooldown from the failure


async def test_access_tokens_expire_and_refresh_tokens_outlive_them(world: World) -> None:
    pair = await world.register()
    assert (await world.accounts.authenticate(pair.access_token)).user.email == "ann@example.com"
    world.clock.advance(minutes=15)
    with pytest.raises(AuthenticationError):
        await world.accounts.authenticate(pair.access_token)
    fresh = await world.accounts.refresh(pair.refresh_token)
    assert await world.accounts.authenticate(fresh.access_token)
    world.clock.advance(days=30)
    with pytest.raises(AuthenticationError):
        await world.accounts.refresh(fresh.refresh_token)


async def test_activity_is_recorded_at_most_once_a_minute(world: World) -> None:
    pair = await world.register()
    user_id = pair.user.id  # type: ignore[attr-defined]

    async def last_seen() -> object:
        user = await world.repos.users.get(user_id)
        assert user is not None
        return user.last_seen_at

    await world.accounts.authenticate(pair.access_token)
    first = world.clock.now()
    assert await last_seen() == first
    world.clock.advance(seconds=30)
    await world.accounts.authenticate(pair.access_token)
    assert await last_seen() == first
    world.clock.advance(seconds=31)
    await world.accounts.authenticate(pair.access_token)
    assert await last_seen() == world.clock.now()


async def test_login_rehashes_a_password_hashed_with_older_parameters() -> None:
    weak = FastPasswordHasher()
    world = make_world(hasher=weak)
    pair = await world.register()
    old_hash = pair.user.password_hash  # type: ignore[attr-defined]
    world.accounts._hasher = Argon2PasswordHasher(time_cost=1, memory_cost=16)  # stronger
    await world.accounts.login("ann@example.com", PASSWORD, CLIENT)
    user = await world.repos.users.get(pair.user.id)  # type: ignore[attr-defined]
    assert user is not None
    assert user.password_hash != old_hash
    assert "m=16,t=1" in user.password_hash
    await world.accounts.login("ann@example.com", PASSWORD, CLIENT)


async def test_login_refuses_unknown_wrong_and_deactivated(world: World) -> None:
    pair = await world.register()
    with pytest.raises(AuthenticationError) as unknown:
        await world.accounts.login("nobody@example.com", PASSWORD, CLIENT)
    with pytest.raises(AuthenticationError) as wrong:
        await world.accounts.login("ann@example.com", "not the password", CLIENT)
    assert unknown.value.detail == wrong.value.detail
    with pytest.raises(AuthenticationError):
        await world.accounts.login("not an email", PASSWORD, CLIENT)
    await world.repos.users.update(pair.user.id, UserChanges(is_active=False))  # type: ignore[attr-defined]
    with pytest.raises(PermissionDeniedError):
        await world.accounts.login("ann@example.com", PASSWORD, CLIENT)


async def test_the_first_admin_is_created_once_with_a_free_username(world: World) -> None:
    await world.register("someone@example.com", "root")
    admin = await world.accounts.ensure_admin("Root@Example.com", "an admin passphrase")
    assert (admin.email, admin.is_admin, admin.is_verified) == ("root@example.com", True, True)
    assert admin.username == "root2"
    again = await world.accounts.ensure_admin("root@example.com", "another passphrase")
    assert again == admin
    with pytest.raises(InvalidInputError) as weak:
        await world.accounts.ensure_admin("boss@example.com", "short")
    assert weak.value.field == "ADMIN_PASSWORD"


async def test_an_existing_account_named_as_admin_is_left_alone(world: World) -> None:
    pair = await world.register("ann@example.com", "ann")
    kept = await world.accounts.ensure_admin("ann@example.com", "an admin passphrase")
    assert kept.is_admin is False
    assert kept == await world.repos.users.get(pair.user.id)  # type: ignore[attr-defined]


async def test_usernames_are_unique_regardless_of_case(world: World) -> None:
    await world.register("ann@example.com", "Ann")
    with pytest.raises(ConflictError) as taken:
        await world.register("bob@example.com", "aNN")
    assert taken.value.field == "username"
