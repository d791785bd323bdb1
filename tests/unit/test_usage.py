"""Usage and daily quotas in the core, on the in-memory adapters and a fake
clock: which day an answer counts on, the limits that apply, refusals across
a UTC midnight, estimated tokens, the reports and their ranges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from adapters.memory import (
    FakeClock,
    InMemoryAnswerOwner,
    InMemoryAnswerSignals,
    InMemoryRepositories,
    InMemorySignalHub,
    RecordingTelemetry,
    memory_file_storage,
)
from gemini_core.accounts import Principal
from gemini_core.admin import MAX_QUOTA, AccountEdit, AdminService
from gemini_core.chats import AnswerStopped, ChatRules, ChatService, StoredImages
from gemini_core.entities import (
    DailyUsage,
    MessageStatus,
    NewUser,
    NewUserSession,
    User,
    UserChanges,
)
from gemini_core.errors import InvalidInputError, QuotaExceededError
from gemini_core.llm import LlmChunk, LlmRequest, Usage
from gemini_core.telemetry import QuotaRefused
from gemini_core.usage import (
    QuotaRules,
    Quotas,
    UsageService,
    estimate_tokens,
)

NEAR_MIDNIGHT = datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC)
DAY = NEAR_MIDNIGHT.date()
NEXT_DAY = DAY + timedelta(days=1)
REPORTED = Usage(prompt_tokens=20, completion_tokens=5)


class Model:
    """Answers "four five six" (12 characters), reporting ``usage`` or not; with
    ``hold``, waits after the first piece until released."""

    def __init__(self, usage: Usage | None = REPORTED) -> None:
        self.usage = usage
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        yield LlmChunk("four ")
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        yield LlmChunk("five six")
        if self.usage is not None:
            yield self.usage

    async def aclose(self) -> None:
        pass


@dataclass
class World:
    clock: FakeClock
    repos: InMemoryRepositories
    model: Model
    telemetry: RecordingTelemetry
    chats: ChatService
    usage: UsageService
    quotas: Quotas

    async def user(self, name: str, **fields: object) -> User:
        return await self.repos.users.add(
            NewUser(email=f"{name}@x.io", username=name, password_hash="h", **fields)  # type: ignore[arg-type]
        )

    async def send(self, user: User, content: str = "Hello there") -> None:
        chat = await self.chats.create_chat(user.id)
        exchange = await self.chats.send_message(user.id, chat.id, content)
        await exchange.complete()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = await make_world(QuotaRules(daily_messages=2, daily_tokens=1000))
    yield made
    await made.chats.aclose()


async def make_world(rules: QuotaRules, model: Model | None = None) -> World:
    clock = FakeClock(NEAR_MIDNIGHT)
    repos = InMemoryRepositories(clock=clock)
    model = model or Model()
    telemetry = RecordingTelemetry()
    quotas = Quotas(rules, clock=clock, users=repos.users)
    chats = ChatService(
        chats=repos.chats,
        messages=repos.messages,
        files=repos.files,
        images=StoredImages(memory_file_storage(), max_bytes=1000),
        llm=model,
        rules=ChatRules(models=("m",), model_titles=False),
        telemetry=telemetry,
        owner=InMemoryAnswerOwner(repos.store),
        signals=InMemoryAnswerSignals(InMemorySignalHub()),
        quotas=quotas,
    )
    usage = UsageService(usage=repos.usage, quotas=quotas, clock=clock)
    return World(clock, repos, model, telemetry, chats, usage, quotas)


# --- the day and the limits --------------------------------------------------------


async def test_today_ends_at_the_next_utc_midnight(world: World) -> None:
    ann = await world.user("ann")
    quota = world.quotas.today(ann)
    assert (quota.day, quota.resets_at) == (DAY, datetime(2026, 3, 15, tzinfo=UTC))
    assert quota.retry_after == 30
    world.clock.advance(seconds=29.5)
    assert world.quotas.today(ann).retry_after == 1, "never 0: the caller must wait"
    world.clock.advance(seconds=1)
    assert world.quotas.today(ann).day == NEXT_DAY


async def test_a_users_own_limits_replace_the_defaults_and_admins_have_none(world: World) -> None:
    ann = await world.user("ann")
    own = await world.user("own", is_admin=False)
    root = await world.user("root", is_admin=True)
    boss = await world.user("boss", is_admin=True)
    own = await world.repos.users.update(own.id, UserChanges(daily_message_quota=9))
    boss = await world.repos.users.update(
        boss.id, UserChanges(daily_message_quota=1, daily_token_quota=50)
    )

    assert world.quotas.limits(ann) == (2, 1000)
    assert world.quotas.limits(own) == (9, 1000)
    assert world.quotas.limits(root) == (None, None)
    assert world.quotas.limits(boss) == (1, 50)
    assert (await world.quotas.today_for(own.id)).messages == 9
    assert (await world.quotas.today_for(12345)).messages == 2, "a user not found: the defaults"


def test_a_negative_default_quota_is_refused() -> None:
    with pytest.raises(ValueError, match="daily_messages"):
        QuotaRules(daily_messages=-1)


# --- refusals across a UTC midnight -------------------------------------------------


async def test_the_message_quota_refuses_until_midnight_then_a_new_day_counts(
    world: World,
) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.send(ann)
    await world.send(ann)
    chat = await world.chats.create_chat(ann.id)

    with pytest.raises(QuotaExceededError) as refused:
        await world.chats.send_message(ann.id, chat.id, "one more")
    error = refused.value
    assert (error.unit, error.quota, error.used) == ("messages", 2, 2)
    assert (error.resets_at, error.retry_after) == (datetime(2026, 3, 15, tzinfo=UTC), 30)
    assert error.kind == "quota-exceeded"
    assert await world.repos.messages.branch(ann.id, chat.id, ending_at=10**6, limit=9) == []
    assert (await world.repos.chats.get(ann.id, chat.id)).message_count == 0  # type: ignore[union-attr]
    assert world.telemetry.events[-1] == QuotaRefused(user_id=ann.id, unit="messages")
    await world.send(bob)  # another user's day is their own

    world.clock.advance(seconds=31)  # 00:00:01 the next day
    exchange = await world.chats.send_message(ann.id, chat.id, "one more")
    assert (await exchange.complete()).status is MessageStatus.COMPLETE
    report = await world.usage.report(ann, first=DAY, last=NEXT_DAY)
    assert report.days == [DailyUsage(DAY, 2, 40, 10), DailyUsage(NEXT_DAY, 1, 20, 5)]


async def test_regenerating_counts_and_is_refused_like_a_send(world: World) -> None:
    ann = await world.user("ann")
    chat = await world.chats.create_chat(ann.id)
    first = await (await world.chats.send_message(ann.id, chat.id, "Hi")).complete()
    await (await world.chats.regenerate(ann.id, chat.id, first.id)).complete()
    with pytest.raises(QuotaExceededError):
        await world.chats.regenerate(ann.id, chat.id, first.id)
    assert (await world.usage.report(ann)).quota.used_messages_today == 2


async def test_the_token_quota_refuses_once_reached_and_running_answers_may_pass_it() -> None:
    world = await make_world(QuotaRules(daily_tokens=30))
    try:
        ann = await world.user("ann")
        await world.send(ann)  # 25 tokens: under 30
        world.model.hold = asyncio.Event()
        chat = await world.chats.create_chat(ann.id)
        running = await world.chats.send_message(ann.id, chat.id, "long one")
        await world.model.holding.wait()
        world.model.hold.set()
        await running.complete()  # started under the quota; ends at 50

        with pytest.raises(QuotaExceededError) as refused:
            await world.send(ann)
        assert (refused.value.unit, refused.value.quota, refused.value.used) == ("tokens", 30, 50)
        report = await world.usage.report(ann)
        assert (report.quota.used_tokens_today, report.quota.daily_tokens) == (50, 30)
    finally:
        await world.chats.aclose()


async def test_a_quota_of_zero_refuses_the_first_answer() -> None:
    world = await make_world(QuotaRules(daily_messages=0))
    try:
        ann = await world.user("ann")
        with pytest.raises(QuotaExceededError) as refused:
            await world.send(ann)
        assert (refused.value.quota, refused.value.used) == (0, 0)
    finally:
        await world.chats.aclose()


# --- every answer's tokens ----------------------------------------------------------


async def test_tokens_the_model_did_not_report_are_estimated() -> None:
    world = await make_world(QuotaRules(), Model(usage=None))
    try:
        ann = await world.user("ann")
        chat = await world.chats.create_chat(ann.id)
        answer = await (await world.chats.send_message(ann.id, chat.id, "x" * 41)).complete()
        # 41 characters of prompt: 11 tokens; "four five six": 13 characters, 4 tokens.
        assert (answer.prompt_tokens, answer.completion_tokens) == (11, 4)
        assert (await world.usage.report(ann)).totals.completion_tokens == 4
    finally:
        await world.chats.aclose()


async def test_a_stopped_answer_counts_the_tokens_of_its_text_so_far() -> None:
    world = await make_world(QuotaRules(), Model())
    try:
        ann = await world.user("ann")
        world.model.hold = asyncio.Event()
        chat = await world.chats.create_chat(ann.id)
        exchange = await world.chats.send_message(ann.id, chat.id, "Hi")
        await world.model.holding.wait()
        await world.chats.stop(ann.id, chat.id)
        events = [event async for event in exchange.events]
        assert isinstance(events[-1], AnswerStopped)
        stored = events[-1].message
        assert stored is not None
        # The model never reported: the prompt ("Hi") and "four " are estimated.
        assert (stored.prompt_tokens, stored.completion_tokens) == (1, 2)
        assert (await world.usage.report(ann)).days[-1] == DailyUsage(DAY, 1, 1, 2)
    finally:
        await world.chats.aclose()


def test_an_estimate_is_a_token_per_four_characters_rounded_up() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


# --- the reports ----------------------------------------------------------------------


async def test_a_report_lists_every_day_of_its_range_with_totals(world: World) -> None:
    ann = await world.user("ann")
    await world.send(ann)
    report = await world.usage.report(ann)
    assert len(report.days) == 30
    assert (report.days[0].day, report.days[-1].day) == (DAY - timedelta(days=29), DAY)
    assert report.days[-1] == DailyUsage(DAY, 1, 20, 5)
    assert all(d.messages == 0 for d in report.days[:-1])
    assert (report.totals.messages, report.totals.prompt_tokens) == (1, 20)
    quota = report.quota
    assert (quota.daily_messages, quota.daily_tokens) == (2, 1000)
    assert (quota.used_messages_today, quota.used_tokens_today) == (1, 25)

    # A range in the past still says how today stands.
    old = await world.usage.report(ann, first=date(2026, 1, 1), last=date(2026, 1, 3))
    assert [d.messages for d in old.days] == [0, 0, 0]
    assert (old.totals.messages, old.quota.used_messages_today) == (0, 1)
    # Only a start: up to today.
    since = await world.usage.report(ann, first=DAY - timedelta(days=2))
    assert [d.day for d in since.days] == [DAY - timedelta(days=n) for n in (2, 1, 0)]


async def test_a_range_must_run_forwards_and_span_at_most_366_days(world: World) -> None:
    ann = await world.user("ann")
    with pytest.raises(InvalidInputError) as backwards:
        await world.usage.report(ann, first=DAY, last=DAY - timedelta(days=1))
    assert backwards.value.field == "from"
    with pytest.raises(InvalidInputError) as long:
        await world.usage.report(ann, first=DAY - timedelta(days=366), last=DAY)
    assert long.value.field == "to"
    year = await world.usage.report(ann, first=DAY - timedelta(days=365), last=DAY)
    assert len(year.days) == 366
    # At the ends of the calendar, the default span is cut short rather than overflow.
    first_days = await world.usage.report(ann, last=date.min + timedelta(days=2))
    assert [d.day for d in first_days.days] == [date.min + timedelta(days=n) for n in range(3)]
    last_days = await world.usage.report(ann, first=date.max)
    assert [d.day for d in last_days.days] == [date.max]


async def test_usage_by_user_pages_biggest_first(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.send(ann)
    await world.send(bob)
    await world.send(bob)
    page = await world.usage.by_user(size=1)
    assert (page.total, page.pages, page.page, page.size) == (2, 2, 1, 1)
    assert [(u.user.id, u.messages, u.prompt_tokens) for u in page.items] == [(bob.id, 2, 40)]
    second = await world.usage.by_user(page=2, size=1)
    assert [u.user.id for u in second.items] == [ann.id]
    with pytest.raises(InvalidInputError):
        await world.usage.by_user(page=0)
    with pytest.raises(InvalidInputError):
        await world.usage.by_user(size=101)


# --- an admin sets a user's own limits ----------------------------------------------


async def test_an_admin_sets_and_resets_a_users_quotas() -> None:
    clock = FakeClock(NEAR_MIDNIGHT)
    repos = InMemoryRepositories(clock=clock)
    admin = AdminService(users=repos.users, sessions=repos.sessions, stats=repos.stats, clock=clock)
    root = await repos.users.add(
        NewUser(email="root@x.io", username="root", password_hash="h", is_admin=True)
    )
    ann = await repos.users.add(NewUser(email="ann@x.io", username="ann", password_hash="h"))
    session = await repos.sessions.add(
        NewUserSession(user_id=root.id, refresh_token_hash="r", expires_at=clock.now())
    )
    me = Principal(user=root, session=session)

    limited = await admin.edit_user(
        me, ann.id, AccountEdit(daily_message_quota=5, daily_token_quota=0)
    )
    assert (limited.daily_message_quota, limited.daily_token_quota) == (5, 0)
    back = await admin.edit_user(me, ann.id, AccountEdit(default_daily_token_quota=True))
    assert (back.daily_message_quota, back.daily_token_quota) == (5, None)
    for bad in (-1, MAX_QUOTA + 1):
        with pytest.raises(InvalidInputError) as refused:
            await admin.edit_user(me, ann.id, AccountEdit(daily_message_quota=bad))
        assert refused.value.field == "daily_message_quota"
    assert await repos.users.get(ann.id) == back
