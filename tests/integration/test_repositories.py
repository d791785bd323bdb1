"""One contract for the repository ports, run on the in-memory adapters and on
PostgreSQL, so the fakes the other tests lean on cannot drift from the real
thing. The ports' docstrings are the contract; the cases here pin down what
they leave to interpretation (orderings, case, ties, concurrency).

The PostgreSQL databases run in an unusual time zone, so every timestamp
checked by ``assert_utc`` proves the adapters hand back UTC.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adapters.memory import FakeClock, InMemoryRepositories, InMemoryStore
from adapters.memory import chats as memory_chats
from adapters.postgres import chats as postgres_chats
from adapters.postgres import migrations
from adapters.postgres._common import ANSWER_OWNER_LOCK_CLASS
from adapters.postgres.pool import Database
from adapters.postgres.repositories import (
    PostgresChatRepository,
    PostgresFileUploadRepository,
    PostgresMessageRepository,
    PostgresOtpRepository,
    PostgresSessionRepository,
    PostgresStatsRepository,
    PostgresUsageRepository,
    PostgresUserRepository,
)
from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    DailyQuota,
    DailyUsage,
    FileUpload,
    Message,
    MessageRole,
    MessageStatus,
    NewAnswer,
    NewChat,
    NewFileUpload,
    NewMessage,
    NewOtpVerification,
    NewUser,
    NewUserSession,
    OtpPurpose,
    User,
    UserChanges,
    UserSession,
)
from gemini_core.errors import (
    AnswerInProgressError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    TooManyAnswersError,
    TooManyRequestsError,
)
from gemini_core.ports import (
    ChatRepository,
    FileUploadRepository,
    MessageRepository,
    OtpRepository,
    SessionRepository,
    StatsRepository,
    UsageRepository,
    UserRepository,
)

from .pgutil import create_database, dbname_of, drop_database, unique_dbname, url_with_dbname

# Not UTC, not a whole hour away from it, and with daylight saving time.
ODD_TIME_ZONE = "Pacific/Chatham"

EMAIL = OtpPurpose.EMAIL_VERIFICATION
RESET = OtpPurpose.PASSWORD_RESET


@dataclass(frozen=True)
class Repos:
    kind: str
    clock: FakeClock
    users: UserRepository
    chats: ChatRepository
    messages: MessageRepository
    files: FileUploadRepository
    otps: OtpRepository
    sessions: SessionRepository
    stats: StatsRepository
    usage: UsageRepository
    keep_alive: Callable[[int], AbstractAsyncContextManager[None]]
    """Plays a live process holding this ``AnswerOwner`` key, while entered."""


def memory_owner(store: InMemoryStore) -> Callable[[int], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def keep_alive(key: int) -> AsyncIterator[None]:
        store.live_owners.add(key)
        try:
            yield
        finally:
            store.live_owners.discard(key)

    return keep_alive


def postgres_owner(url: str) -> Callable[[int], AbstractAsyncContextManager[None]]:
    """A session holding the key's advisory lock, as a live process's owner does."""

    @asynccontextmanager
    async def keep_alive(key: int) -> AsyncIterator[None]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s, %s)", (ANSWER_OWNER_LOCK_CLASS, key))
            yield

    return keep_alive


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def repos(request: pytest.FixtureRequest) -> Repos:
    # Starts at the real time, so times the tests pass (expiries, "now")
    # line up with the timestamps PostgreSQL takes from now().
    clock = FakeClock(datetime.now(UTC))
    if request.param == "memory":
        memory = InMemoryRepositories(clock=clock)
        return Repos(
            "memory",
            clock,
            memory.users,
            memory.chats,
            memory.messages,
            memory.files,
            memory.otps,
            memory.sessions,
            memory.stats,
            memory.usage,
            memory_owner(memory.store),
        )
    url: str = request.getfixturevalue("database_url")
    admin: psycopg.Connection[Any] = request.getfixturevalue("pg_admin")
    admin.execute(
        sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(
            sql.Identifier(dbname_of(url)), sql.Literal(ODD_TIME_ZONE)
        )
    )
    db: Database = request.getfixturevalue("database")
    return Repos(
        "postgres",
        clock,
        PostgresUserRepository(db),
        PostgresChatRepository(db),
        PostgresMessageRepository(db),
        PostgresFileUploadRepository(db),
        PostgresOtpRepository(db),
        PostgresSessionRepository(db),
        PostgresStatsRepository(db),
        PostgresUsageRepository(db),
        postgres_owner(url),
    )


def assert_utc(*values: datetime | None) -> None:
    for value in values:
        assert value is not None
        assert value.tzinfo is UTC, value


async def add_user(repos: Repos, name: str, **fields: Any) -> User:
    return await repos.users.add(
        NewUser(email=f"{name}@example.com", username=name, password_hash="hash", **fields)
    )


async def add_chat(repos: Repos, user: User, title: str | None = None) -> Chat:
    return await repos.chats.add(NewChat(user_id=user.id, model="gemini-pro", title=title))


async def say(repos: Repos, chat: Chat, content: str = "hello") -> int:
    """Add a message after the chat's current leaf, as a send does."""
    message = NewMessage(
        chat_id=chat.id,
        user_id=chat.user_id,
        role=MessageRole.USER,
        content=content,
        after_current_leaf=True,
    )
    return (await repos.messages.add(message)).id


async def thread(repos: Repos, user_id: int, chat_id: int, limit: int = 100) -> list[Message]:
    """The chat's active branch (all of a chat that never branched), oldest first."""
    chat = await repos.chats.get(user_id, chat_id)
    if chat is None or chat.current_message_id is None:
        return []
    return await repos.messages.branch(
        user_id, chat_id, ending_at=chat.current_message_id, limit=limit
    )


async def add_file(repos: Repos, user: User, name: str, size: int = 10) -> FileUpload:
    return await repos.files.add(
        NewFileUpload(
            user_id=user.id,
            filename=name,
            original_filename=f"original-{name}",
            content_type="image/png",
            file_size=size,
        )
    )


def ids(items: Sequence[Any]) -> list[int]:
    return [item.id for item in items]


# --- users -------------------------------------------------------------------


async def test_a_new_user_gets_an_id_defaults_and_utc_timestamps(repos: Repos) -> None:
    user = await repos.users.add(
        NewUser(email="ann@example.com", username="ann", password_hash="h", full_name="Ann")
    )
    assert user.id > 0
    assert (user.email, user.username, user.full_name, user.password_hash) == (
        "ann@example.com",
        "ann",
        "Ann",
        "h",
    )
    assert (user.is_active, user.is_verified, user.is_admin) == (True, False, False)
    assert user.created_at == user.updated_at
    assert (user.last_login_at, user.last_seen_at, user.deleted_at) == (None, None, None)
    assert_utc(user.created_at, user.updated_at)
    assert await repos.users.get(user.id) == user
    assert await repos.users.get(user.id + 1000) is None
    admin = await add_user(repos, "root", is_admin=True, is_verified=True, is_active=False)
    assert (admin.is_active, admin.is_verified, admin.is_admin) == (False, True, True)


async def test_emails_are_unique_and_found_regardless_of_case(repos: Repos) -> None:
    user = await repos.users.add(
        NewUser(email="Ann@Example.com", username="ann", password_hash="h")
    )
    assert user.email == "Ann@Example.com"  # stored as given; the service lower-cases
    assert await repos.users.get_by_email("ann@example.COM") == user
    assert await repos.users.get_by_email("bob@example.com") is None
    with pytest.raises(ConflictError) as caught:
        await repos.users.add(NewUser(email="ANN@EXAMPLE.COM", username="other", password_hash="h"))
    assert caught.value.field == "email"


async def test_usernames_are_unique_regardless_of_case(repos: Repos) -> None:
    await add_user(repos, "ann")
    with pytest.raises(ConflictError) as caught:
        await repos.users.add(NewUser(email="x@example.com", username="ANN", password_hash="h"))
    assert caught.value.field == "username"
    with pytest.raises(ConflictError) as caught:  # both taken: the email is reported
        await repos.users.add(NewUser(email="ann@example.com", username="ANN", password_hash="h"))
    assert caught.value.field == "email"


async def test_update_changes_only_what_is_given_and_bumps_updated_at(repos: Repos) -> None:
    user = await add_user(repos, "ann", full_name="Ann")
    repos.clock.advance(seconds=5)
    login = repos.clock.now()
    updated = await repos.users.update(
        user.id,
        UserChanges(username="anna", is_verified=True, last_login_at=login, password_hash="new"),
    )
    assert (updated.username, updated.is_verified, updated.password_hash) == ("anna", True, "new")
    assert (updated.email, updated.full_name, updated.is_active) == (user.email, "Ann", True)
    assert updated.last_login_at == login
    assert updated.updated_at > user.updated_at
    assert updated.created_at == user.created_at
    assert_utc(updated.last_login_at, updated.updated_at)
    assert await repos.users.get(user.id) == updated

    cleared = await repos.users.update(user.id, UserChanges(clear_full_name=True))
    assert cleared.full_name is None
    assert cleared.last_login_at == login  # None leaves a field alone
    renamed = await repos.users.update(user.id, UserChanges(full_name="Anna K"))
    assert renamed.full_name == "Anna K"

    deleted = await repos.users.update(
        user.id, UserChanges(deleted_at=login, is_active=False, is_admin=True)
    )
    assert (deleted.deleted_at, deleted.is_active, deleted.is_admin) == (login, False, True)
    assert deleted.is_deleted
    assert not deleted.can_sign_in


async def test_update_refuses_taken_values_and_unknown_users(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    await add_user(repos, "bob")
    with pytest.raises(ConflictError) as caught:
        await repos.users.update(ann.id, UserChanges(email="BOB@example.com"))
    assert caught.value.field == "email"
    with pytest.raises(ConflictError) as caught:
        await repos.users.update(ann.id, UserChanges(username="Bob"))
    assert caught.value.field == "username"
    assert await repos.users.get(ann.id) == ann
    # A user does not clash with themself.
    same = await repos.users.update(ann.id, UserChanges(email="ANN@example.com", username="Ann"))
    assert (same.email, same.username) == ("ANN@example.com", "Ann")
    with pytest.raises(NotFoundError):
        await repos.users.update(ann.id + 1000, UserChanges(full_name="x"))


async def test_touch_records_the_latest_sighting(repos: Repos) -> None:
    user = await add_user(repos, "ann")
    seen = repos.clock.now() + timedelta(minutes=5)
    await repos.users.touch(user.id, seen)
    await repos.users.touch(user.id, seen - timedelta(minutes=1))  # a slow, older request
    touched = await repos.users.get(user.id)
    assert touched is not None
    assert touched.last_seen_at == seen
    assert_utc(touched.last_seen_at)
    assert touched.updated_at == user.updated_at
    await repos.users.touch(user.id + 1000, seen)  # nobody: nothing happens


async def test_search_matches_email_or_username_parts_and_skips_deleted(repos: Repos) -> None:
    alice = await repos.users.add(
        NewUser(email="alice@wonder.land", username="al", password_hash="h")
    )
    bob = await repos.users.add(
        NewUser(email="bob@example.com", username="Alibaba", password_hash="h")
    )
    carol = await repos.users.add(
        NewUser(email="carol@example.org", username="c_100%", password_hash="h")
    )
    gone = await repos.users.add(
        NewUser(email="alias@example.com", username="ali", password_hash="h")
    )
    await repos.users.update(gone.id, UserChanges(deleted_at=repos.clock.now()))

    page = await repos.users.search("ALI", offset=0, limit=10)
    assert (ids(page.items), page.total) == ([alice.id, bob.id], 2)
    page = await repos.users.search("EXAMPLE.", offset=0, limit=10)
    assert (ids(page.items), page.total) == ([bob.id, carol.id], 2)
    # LIKE's wildcards are plain characters here.
    assert ids((await repos.users.search("%", offset=0, limit=10)).items) == [carol.id]
    assert (await repos.users.search("_1", offset=0, limit=10)).items[0] == carol
    assert (await repos.users.search("c%", offset=0, limit=10)).total == 0

    everyone = await repos.users.search(None, offset=0, limit=10)
    assert (ids(everyone.items), everyone.total) == ([alice.id, bob.id, carol.id], 3)
    page = await repos.users.search(None, offset=1, limit=1)
    assert (ids(page.items), page.total) == ([bob.id], 3)
    page = await repos.users.search(None, offset=5, limit=10)
    assert (page.items, page.total) == ([], 3)
    page = await repos.users.search("nobody", offset=0, limit=10)
    assert (page.items, page.total) == ([], 0)
    with pytest.raises(InvalidInputError):
        await repos.users.search(None, offset=-1, limit=10)


async def test_an_update_keeping_an_admin_refuses_to_take_the_last_one(repos: Repos) -> None:
    root = await add_user(repos, "root", is_admin=True)
    ann = await add_user(repos, "ann", is_admin=True)
    await add_user(repos, "idle", is_admin=True, is_active=False)  # counts for nothing
    demoted = await repos.users.update_keeping_an_admin(ann.id, UserChanges(is_admin=False))
    assert demoted is not None
    assert demoted.is_admin is False
    for change in (
        UserChanges(is_admin=False),
        UserChanges(is_active=False),
        UserChanges(deleted_at=repos.clock.now()),
    ):
        assert await repos.users.update_keeping_an_admin(root.id, change) is None
        assert await repos.users.get(root.id) == root  # nothing changed
    renamed = await repos.users.update_keeping_an_admin(root.id, UserChanges(full_name="Root"))
    assert renamed is not None
    assert renamed.full_name == "Root"
    with pytest.raises(NotFoundError):
        await repos.users.update_keeping_an_admin(root.id + 1000, UserChanges(is_admin=False))


async def test_admins_demoting_each_other_at_once_leave_one(repos: Repos) -> None:
    admins = [await add_user(repos, f"admin{n}", is_admin=True) for n in range(6)]
    changes = [
        UserChanges(is_admin=False),
        UserChanges(is_active=False),
        UserChanges(deleted_at=repos.clock.now()),
    ]
    # Warm the pool first, so the updates really run side by side.
    await asyncio.gather(*(repos.users.get(admin.id) for admin in admins * 3))
    results = await asyncio.gather(
        *(
            repos.users.update_keeping_an_admin(admin.id, changes[n % 3])
            for n, admin in enumerate(admins)
        )
    )
    assert sum(result is None for result in results) == 1
    left = [await repos.users.get(admin.id) for admin in admins]
    assert sum(u is not None and u.is_admin and u.is_active and not u.is_deleted for u in left) == 1


# --- chats -------------------------------------------------------------------


async def test_a_new_chat_is_empty_and_only_its_owner_sees_it(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chat = await repos.chats.add(
        NewChat(user_id=ann.id, model="gemini-pro", title="Plans", system_prompt="Be brief.")
    )
    assert (chat.user_id, chat.title, chat.model, chat.system_prompt) == (
        ann.id,
        "Plans",
        "gemini-pro",
        "Be brief.",
    )
    assert (chat.pinned, chat.archived, chat.message_count) == (False, False, 0)
    assert chat.created_at == chat.updated_at
    assert_utc(chat.created_at, chat.updated_at)
    assert await repos.chats.get(ann.id, chat.id) == chat
    assert await repos.chats.get(bob.id, chat.id) is None
    assert await repos.chats.list(bob.id, archived=False, query=None, limit=10, after=None) == []
    assert await repos.chats.update(bob.id, chat.id, ChatChanges(title="mine")) is None
    assert await repos.chats.delete(bob.id, chat.id) is False
    assert await repos.chats.get(ann.id, chat.id) == chat


async def test_rows_need_an_existing_user(repos: Repos) -> None:
    with pytest.raises(NotFoundError):
        await repos.chats.add(NewChat(user_id=999, model="gemini-pro"))
    with pytest.raises(NotFoundError):
        await repos.files.add(
            NewFileUpload(
                user_id=999,
                filename="a.png",
                original_filename="a.png",
                content_type="image/png",
                file_size=1,
            )
        )
    with pytest.raises(NotFoundError):
        await repos.sessions.add(
            NewUserSession(user_id=999, refresh_token_hash="h", expires_at=repos.clock.now())
        )


def cursor_after(chat: Chat) -> ChatCursor:
    return ChatCursor(pinned=chat.pinned, updated_at=chat.updated_at, id=chat.id)


async def test_chats_list_pinned_first_then_recent_and_pages_without_gaps(repos: Repos) -> None:
    rng = random.Random(20260101)
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    created = [await add_chat(repos, ann, f"chat {n}") for n in range(24)]
    await add_chat(repos, bob, "not ann's")
    # Pin some and touch some, sometimes at the same instant (ties on
    # updated_at fall back to the id), sometimes later.
    for chat in rng.sample(created, 16):
        if rng.random() < 0.6:
            repos.clock.advance(seconds=1)
        if rng.random() < 0.4:
            await repos.chats.update(ann.id, chat.id, ChatChanges(pinned=True))
        else:
            await say(repos, chat)
    current = [await repos.chats.get(ann.id, chat.id) for chat in created]
    expected = sorted(
        (c for c in current if c is not None),
        key=lambda c: (c.pinned, c.updated_at, c.id),
        reverse=True,
    )
    assert any(c.pinned for c in expected)
    assert not all(c.pinned for c in expected)

    for limit in (1, 5, 7, 24, 100):
        seen: list[Chat] = []
        after: ChatCursor | None = None
        while True:
            page = await repos.chats.list(
                ann.id, archived=False, query=None, limit=limit, after=after
            )
            assert len(page) <= limit
            seen += page
            if len(page) < limit:
                break
            after = cursor_after(page[-1])
        assert seen == expected, f"limit {limit}"

    # A cursor from a row that has since moved still resumes at its position.
    moved = expected[3]
    await say(repos, moved)
    rest = await repos.chats.list(
        ann.id, archived=False, query=None, limit=100, after=cursor_after(moved)
    )
    assert ids(rest) == [c.id for c in expected[4:]]


async def test_chats_list_filters_archived_and_title(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    trip = await add_chat(repos, ann, "Trip to Rome")
    recipes = await add_chat(repos, ann, "Recipes 100%")
    untitled = await add_chat(repos, ann)
    old = await add_chat(repos, ann, "Old trip")
    await repos.chats.update(ann.id, old.id, ChatChanges(archived=True))

    async def listed(archived: bool, query: str | None) -> list[int]:
        page = await repos.chats.list(ann.id, archived=archived, query=query, limit=10, after=None)
        return ids(page)

    assert await listed(False, None) == [untitled.id, recipes.id, trip.id]
    assert await listed(True, None) == [old.id]
    assert await listed(False, "TRIP") == [trip.id]
    assert await listed(True, "trip") == [old.id]
    assert await listed(False, "0%") == [recipes.id]
    assert await listed(False, "%") == [recipes.id]
    assert await listed(False, "_") == []
    assert await listed(False, "nothing") == []


async def test_chat_update_sets_and_clears_fields_and_bumps_updated_at(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat = await repos.chats.add(
        NewChat(user_id=ann.id, model="gemini-pro", title="Plans", system_prompt="Be brief.")
    )
    repos.clock.advance(seconds=1)
    pinned = await repos.chats.update(ann.id, chat.id, ChatChanges(pinned=True, model="flash"))
    assert pinned is not None
    assert (pinned.pinned, pinned.model, pinned.title, pinned.system_prompt) == (
        True,
        "flash",
        "Plans",
        "Be brief.",
    )
    assert pinned.updated_at > chat.updated_at
    assert pinned.created_at == chat.created_at
    assert_utc(pinned.updated_at)

    repos.clock.advance(seconds=1)
    cleared = await repos.chats.update(
        ann.id, chat.id, ChatChanges(clear_title=True, clear_system_prompt=True, archived=True)
    )
    assert cleared is not None
    assert (cleared.title, cleared.system_prompt, cleared.archived, cleared.pinned) == (
        None,
        None,
        True,
        True,
    )
    assert cleared.updated_at > pinned.updated_at
    retitled = await repos.chats.update(
        ann.id, chat.id, ChatChanges(title="New", system_prompt="Be kind.", pinned=False)
    )
    assert retitled is not None
    assert (retitled.title, retitled.system_prompt, retitled.pinned) == ("New", "Be kind.", False)
    assert await repos.chats.get(ann.id, chat.id) == retitled
    assert await repos.chats.update(ann.id, chat.id + 1000, ChatChanges(title="x")) is None


async def test_deleting_a_chat_deletes_its_messages(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)
    await say(repos, chat)
    kept = await say(repos, other)
    assert await repos.chats.delete(ann.id, chat.id) is True
    assert await repos.chats.get(ann.id, chat.id) is None
    assert await thread(repos, chat.user_id, chat.id, limit=10) == []
    assert ids(await thread(repos, other.user_id, other.id, limit=10)) == [kept]
    assert await repos.chats.delete(ann.id, chat.id) is False


# --- messages ----------------------------------------------------------------


async def test_adding_a_message_counts_it_and_bumps_its_chat(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat = await add_chat(repos, ann)
    repos.clock.advance(seconds=1)
    message = await repos.messages.add(
        NewMessage(
            chat_id=chat.id,
            user_id=ann.id,
            role=MessageRole.ASSISTANT,
            content="Hi there",
            file_ids=(3, 1, 2),
            status=MessageStatus.FAILED,
            model="gemini-pro",
            prompt_tokens=12,
            completion_tokens=0,
        )
    )
    assert (message.chat_id, message.user_id, message.role, message.status) == (
        chat.id,
        ann.id,
        MessageRole.ASSISTANT,
        MessageStatus.FAILED,
    )
    assert (message.content, message.file_ids, message.model) == (
        "Hi there",
        (3, 1, 2),
        "gemini-pro",
    )
    assert (message.prompt_tokens, message.completion_tokens) == (12, 0)
    assert_utc(message.created_at)
    bumped = await repos.chats.get(ann.id, chat.id)
    assert bumped is not None
    assert bumped.message_count == 1
    assert bumped.updated_at == message.created_at > chat.updated_at

    plain = await repos.messages.add(
        NewMessage(
            chat_id=chat.id,
            user_id=ann.id,
            role=MessageRole.USER,
            content="Hi",
            parent_id=message.id,
        )
    )
    assert (plain.file_ids, plain.status, plain.model, plain.prompt_tokens) == (
        (),
        MessageStatus.COMPLETE,
        None,
        None,
    )
    assert (message.parent_id, message.siblings) == (None, (message.id,))
    assert (plain.parent_id, plain.siblings) == (message.id, (plain.id,))
    assert await thread(repos, chat.user_id, chat.id, limit=10) == [message, plain]


async def test_another_users_chat_has_no_messages_for_them(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chat = await add_chat(repos, ann)
    await say(repos, chat)
    assert await thread(repos, bob.id, chat.id, limit=10) == []
    assert len(await thread(repos, ann.id, chat.id, limit=10)) == 1


async def test_a_message_needs_the_users_own_chat(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chat = await add_chat(repos, ann)
    for chat_id, user_id in ((chat.id, bob.id), (chat.id + 1000, ann.id)):
        with pytest.raises(NotFoundError):
            await repos.messages.add(
                NewMessage(chat_id=chat_id, user_id=user_id, role=MessageRole.USER, content="x")
            )
    assert await repos.chats.get(ann.id, chat.id) == chat
    assert await thread(repos, chat.user_id, chat.id, limit=10) == []


async def test_messages_page_backwards_oldest_first_within_a_page(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)
    sent = []
    for n in range(7):
        sent.append(await say(repos, chat, f"message {n}"))
        await say(repos, other)

    async def page(ending_at: int, limit: int = 3, *, inclusive: bool = False) -> list[int]:
        return ids(
            await repos.messages.branch(
                chat.user_id, chat.id, ending_at=ending_at, limit=limit, inclusive=inclusive
            )
        )

    assert await page(sent[6], inclusive=True) == sent[4:]
    assert await page(sent[4]) == sent[1:4]
    assert await page(sent[1]) == sent[:1]
    assert await page(sent[0]) == []
    assert await page(sent[6], limit=100, inclusive=True) == sent
    assert await page(sent[4], limit=2, inclusive=True) == sent[3:5]
    assert await page(other.id + 10_000, inclusive=True) == []  # not a message of the chat
    for beyond in (2**63, -(2**63) - 1):  # not a bigint: refused, as PostgreSQL does
        with pytest.raises(InvalidInputError):
            await page(beyond)
        with pytest.raises(InvalidInputError):
            await repos.messages.get(ann.id, chat.id, beyond)


async def test_messages_form_a_tree_and_the_chat_follows_its_newest_message(
    repos: Repos,
) -> None:
    ann = await add_user(repos, "ann")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)

    async def add(parent: int | None, role: MessageRole = MessageRole.USER) -> Message:
        new = NewMessage(chat_id=chat.id, user_id=ann.id, role=role, content="x", parent_id=parent)
        return await repos.messages.add(new)

    q1 = await add(None)
    a1 = await add(q1.id, MessageRole.ASSISTANT)
    q2 = await add(a1.id)
    a2 = await add(q2.id, MessageRole.ASSISTANT)
    q2b = await add(a1.id)  # q2 edited: a second branch after a1
    a2b = await add(q2b.id, MessageRole.ASSISTANT)
    a2c = await add(q2b.id, MessageRole.ASSISTANT)  # and regenerated
    q1b = await add(None)  # the first question edited: a second root
    assert q2b.siblings == (q2.id, q2b.id)
    assert a2c.siblings == (a2b.id, a2c.id)
    assert q1b.siblings == (q1.id, q1b.id)

    current = await repos.chats.get(ann.id, chat.id)
    assert current is not None
    assert (current.current_message_id, current.message_count) == (q1b.id, 8)
    branch = await repos.messages.branch(ann.id, chat.id, ending_at=a2c.id, limit=10)
    assert ids(branch) == [q1.id, a1.id, q2b.id, a2c.id]
    assert branch[2].siblings == (q2.id, q2b.id)
    assert branch[0].siblings == (q1.id, q1b.id)
    assert ids(await repos.messages.branch(ann.id, chat.id, ending_at=a2c.id, limit=2)) == [
        q2b.id,
        a2c.id,
    ]
    assert await repos.messages.get(ann.id, chat.id, q2.id) == replace(q2, siblings=(q2.id, q2b.id))
    assert await repos.messages.get(ann.id, other.id, q2.id) is None

    # Switching to a branch lands on its newest leaf.
    for target, leaf in ((q2.id, a2.id), (a1.id, a2c.id), (q2b.id, a2c.id), (a2b.id, a2b.id)):
        switched = await repos.chats.select_branch(ann.id, chat.id, target)
        assert switched is not None
        assert switched.current_message_id == leaf
    assert await repos.chats.select_branch(ann.id, other.id, q2.id) is None
    bob = await add_user(repos, "bob")
    assert await repos.chats.select_branch(bob.id, chat.id, q2.id) is None
    again = await repos.chats.get(ann.id, chat.id)
    assert again is not None
    assert again.current_message_id == a2b.id

    # A parent from another chat is refused, and nothing is stored.
    with pytest.raises(NotFoundError):
        await repos.messages.add(
            NewMessage(
                chat_id=other.id,
                user_id=ann.id,
                role=MessageRole.USER,
                content="x",
                parent_id=q1.id,
            )
        )
    untouched = await repos.chats.get(ann.id, other.id)
    assert untouched is not None
    assert (untouched.message_count, untouched.current_message_id) == (0, None)


async def test_concurrent_messages_are_all_counted(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat = await add_chat(repos, ann)
    added = await asyncio.gather(*(say(repos, chat, f"n{n}") for n in range(20)))
    assert len(set(added)) == 20
    counted = await repos.chats.get(ann.id, chat.id)
    assert counted is not None
    assert counted.message_count == 20
    # Each followed the leaf as it was when stored: one chain, no siblings.
    assert sorted(ids(await thread(repos, chat.user_id, chat.id, limit=100))) == sorted(added)


# --- answers being written -----------------------------------------------------------

OWNER = 7


def ask(chat: Chat, content: str = "why?", **fields: Any) -> NewMessage:
    """A user's new question after the chat's current leaf, unless told otherwise."""
    fields.setdefault("after_current_leaf", "parent_id" not in fields)
    return NewMessage(
        chat_id=chat.id, user_id=chat.user_id, role=MessageRole.USER, content=content, **fields
    )


async def start(
    repos: Repos,
    chat: Chat,
    question: NewMessage | None = None,
    *,
    question_id: int | None = None,
    owner: int = OWNER,
    max_running: int | None = None,
    quota: DailyQuota | None = None,
) -> tuple[Message, Message]:
    if question is None and question_id is None:
        question = ask(chat)
    return await repos.messages.start_answer(
        NewAnswer(
            chat_id=chat.id,
            user_id=chat.user_id,
            model="gemini-flash",
            owner=owner,
            question=question,
            question_id=question_id,
            max_running=max_running,
            quota=quota,
        )
    )


async def finish(
    repos: Repos,
    answer_id: int,
    status: MessageStatus = MessageStatus.COMPLETE,
    content: str = "because",
) -> Message | None:
    return await repos.messages.finish_answer(
        answer_id, status=status, content=content, prompt_tokens=3, completion_tokens=5
    )


async def stored(repos: Repos, message: Message) -> Message:
    found = await repos.messages.get(message.user_id, message.chat_id, message.id)
    assert found is not None
    return found


async def test_an_answer_starts_after_a_new_question_or_an_existing_one(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat = await add_chat(repos, ann)
    first = await say(repos, chat, "hello")
    repos.clock.advance(seconds=1)

    question, answer = await start(repos, chat, ask(chat, "why?"))
    assert (question.role, question.content, question.status) == (
        MessageRole.USER,
        "why?",
        MessageStatus.COMPLETE,
    )
    assert (question.parent_id, question.siblings, question.owner) == (first, (question.id,), None)
    assert (answer.role, answer.status, answer.content, answer.model, answer.owner) == (
        MessageRole.ASSISTANT,
        MessageStatus.STREAMING,
        "",
        "gemini-flash",
        OWNER,
    )
    assert (answer.parent_id, answer.siblings) == (question.id, (answer.id,))
    assert (answer.prompt_tokens, answer.completion_tokens) == (None, None)
    assert_utc(question.created_at, answer.created_at)
    assert await stored(repos, answer) == answer
    after = await repos.chats.get(ann.id, chat.id)
    assert after is not None
    assert (after.current_message_id, after.message_count) == (answer.id, 3)
    assert after.updated_at == answer.created_at > chat.updated_at

    # A regenerate: another answer to the same question, read back as stored.
    await finish(repos, answer.id)
    again, second = await start(repos, chat, question_id=question.id)
    assert again == question
    assert (second.parent_id, second.siblings, second.status) == (
        question.id,
        (answer.id, second.id),
        MessageStatus.STREAMING,
    )
    assert (await stored(repos, answer)).siblings == (answer.id, second.id)
    after = await repos.chats.get(ann.id, chat.id)
    assert after is not None
    assert (after.current_message_id, after.message_count) == (second.id, 4)

    # A question may name its parent: a new branch, and its answer the leaf.
    await finish(repos, second.id)
    edited, third = await start(repos, chat, ask(chat, "how?", parent_id=first))
    assert (edited.parent_id, edited.siblings) == (first, (question.id, edited.id))
    assert ids(await thread(repos, ann.id, chat.id)) == [first, edited.id, third.id]


async def test_a_refused_start_stores_nothing(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)
    question, answer = await start(repos, chat)
    await finish(repos, answer.id)
    elsewhere = await say(repos, other)
    before = [await repos.chats.get(ann.id, chat.id), await repos.chats.get(ann.id, other.id)]
    bobs = replace(chat, user_id=bob.id)

    refusals = [
        start(repos, bobs),  # another user's chat
        start(repos, bobs, question_id=question.id),
        start(repos, chat, ask(chat, parent_id=elsewhere)),  # a parent of another chat
        start(repos, chat, ask(other)),  # a question stored in another chat
        start(repos, chat, question_id=answer.id),  # not a user's message
        start(repos, other, question_id=question.id),  # of another chat
        start(repos, chat, question_id=answer.id + 1000),
    ]
    for refusal in refusals:
        with pytest.raises(NotFoundError):
            await refusal
    after = [await repos.chats.get(ann.id, chat.id), await repos.chats.get(ann.id, other.id)]
    assert after == before
    assert ids(await thread(repos, ann.id, chat.id)) == [question.id, answer.id]
    assert await repos.messages.branch(bob.id, chat.id, ending_at=answer.id, limit=10) == []


async def test_a_chat_has_one_answer_being_written_at_a_time(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)
    question, answer = await start(repos, chat)
    before = await repos.chats.get(ann.id, chat.id)

    for refusal in (
        start(repos, chat, ask(chat, "and?")),  # the new question is not kept
        start(repos, chat, question_id=question.id),
        start(repos, chat, max_running=5),
        start(repos, chat, question_id=question.id, max_running=1),
    ):
        with pytest.raises(AnswerInProgressError):
            await refusal
    assert await repos.chats.get(ann.id, chat.id) == before
    assert ids(await thread(repos, ann.id, chat.id)) == [question.id, answer.id]
    await start(repos, other)  # another chat is free

    await finish(repos, answer.id)
    question2, answer2 = await start(repos, chat, ask(chat, "and?"))
    assert (question2.parent_id, answer2.parent_id) == (answer.id, question2.id)


async def test_of_concurrent_starts_in_a_chat_exactly_one_wins(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    for cap in (None, 10):
        chat = await add_chat(repos, ann)
        results = await asyncio.gather(
            *(start(repos, chat, ask(chat, f"q{n}"), max_running=cap) for n in range(10)),
            return_exceptions=True,
        )
        won = [result for result in results if isinstance(result, tuple)]
        assert len(won) == 1, results
        assert all(isinstance(r, AnswerInProgressError) for r in results if r not in won)
        (question, answer), *_ = won
        after = await repos.chats.get(ann.id, chat.id)
        assert after is not None
        assert (after.current_message_id, after.message_count) == (answer.id, 2)
        assert ids(await thread(repos, ann.id, chat.id)) == [question.id, answer.id]


async def test_a_users_answers_being_written_are_capped_across_chats(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chats = [await add_chat(repos, ann) for _ in range(6)]
    await start(repos, await add_chat(repos, bob))  # someone else's is not counted
    results = await asyncio.gather(
        *(start(repos, chat, max_running=2) for chat in chats), return_exceptions=True
    )
    won = [result for result in results if isinstance(result, tuple)]
    refused = [result for result in results if isinstance(result, TooManyAnswersError)]
    assert (len(won), len(refused)) == (2, 4), results
    assert all(error.retry_after == 5 for error in refused)
    counts = [
        chat.message_count
        for chat in await repos.chats.list(ann.id, archived=False, query=None, limit=10, after=None)
    ]
    assert sorted(counts) == [0, 0, 0, 0, 2, 2]

    # An answer that ends makes room; without a cap there is no limit.
    idle = [chat for chat in chats if chat.id not in {answer.chat_id for _, answer in won}]
    with pytest.raises(TooManyAnswersError):
        await start(repos, idle[0], max_running=2)
    await finish(repos, won[0][1].id)
    await start(repos, idle[0], max_running=2)
    await start(repos, idle[1])


async def test_progress_is_saved_on_answers_still_being_written(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(3)]
    (_, writing), (_, done), (_, stopped) = [await start(repos, chat) for chat in chats]
    await finish(repos, done.id, content="whole")
    await repos.messages.stop_answers(ann.id, stopped.chat_id)
    await repos.messages.save_progress({stopped.id: "stopped at"})

    await repos.messages.save_progress(
        {writing.id: "so far …", done.id: "overwritten", stopped.id: "more", done.id + 999: "x"}
    )
    await repos.messages.save_progress({})
    assert (await stored(repos, writing)).content == "so far …"
    assert (await stored(repos, writing)).status is MessageStatus.STREAMING
    assert (await stored(repos, done)).content == "whole"
    assert (await stored(repos, stopped)).content == ""
    await repos.messages.save_progress({writing.id: "so far … and more"})
    assert (await stored(repos, writing)).content == "so far … and more"


async def test_finishing_an_answer_stores_how_it_ended(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(4)]
    (_, complete), (_, failed), (_, stopped), (_, gone) = [
        await start(repos, chat) for chat in chats
    ]

    finished = await finish(repos, complete.id, MessageStatus.COMPLETE, "all of it")
    assert finished == replace(
        complete,
        status=MessageStatus.COMPLETE,
        content="all of it",
        prompt_tokens=3,
        completion_tokens=5,
        owner=None,
    )
    assert await stored(repos, complete) == finished
    assert await finish(repos, complete.id, MessageStatus.FAILED, "again") is None
    assert await stored(repos, complete) == finished

    finished = await finish(repos, failed.id, MessageStatus.FAILED, "half")
    assert finished is not None
    assert (finished.status, finished.content, finished.owner) == (
        MessageStatus.FAILED,
        "half",
        None,
    )

    # Stopped by its user meanwhile: stays stopped, with the text its owner had.
    assert await repos.messages.stop_answers(ann.id, stopped.chat_id) == [stopped.id]
    finished = await finish(repos, stopped.id, MessageStatus.COMPLETE, "up to the stop")
    assert finished is not None
    assert (finished.status, finished.content, finished.owner) == (
        MessageStatus.STOPPED,
        "up to the stop",
        None,
    )
    assert (finished.prompt_tokens, finished.completion_tokens) == (3, 5)
    assert await finish(repos, stopped.id, MessageStatus.COMPLETE, "later") is None

    assert await repos.chats.delete(ann.id, gone.chat_id)
    assert await finish(repos, gone.id) is None


async def test_stopping_marks_the_users_chats_answers_stopped_once(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chat, other = await add_chat(repos, ann), await add_chat(repos, ann)
    bobs = await add_chat(repos, bob)
    _, answer = await start(repos, chat)
    _, running = await start(repos, other)
    _, bobs_answer = await start(repos, bobs)

    assert await repos.messages.stop_answers(bob.id, chat.id) == []
    assert await repos.messages.stop_answers(ann.id, bobs.id) == []
    assert await repos.messages.stop_answers(ann.id, chat.id) == [answer.id]
    assert await stored(repos, answer) == replace(answer, status=MessageStatus.STOPPED)
    assert await repos.messages.stop_answers(ann.id, chat.id) == []
    for untouched in (running, bobs_answer):
        assert await stored(repos, untouched) == untouched
    # A stopped answer no longer holds its chat.
    await start(repos, chat, ask(chat, "next"))


async def test_answers_of_a_dead_owner_are_failed_and_released(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(5)]
    live, dead, ended = 101, 202, 303
    async with repos.keep_alive(live):
        async with repos.keep_alive(ended):
            pass  # a process that started and ended cleanly
        (_, writing), (_, stopped), (_, orphan), (_, stopped_orphan), (_, done) = [
            await start(repos, chat, owner=owner)
            for chat, owner in zip(chats, (live, live, dead, ended, dead), strict=True)
        ]
        for answer in (stopped, stopped_orphan):
            await repos.messages.stop_answers(ann.id, answer.chat_id)
        await finish(repos, done.id)
        await repos.messages.save_progress({orphan.id: "nine char"})

        assert await repos.messages.fail_orphaned() == [orphan.id]
        # Their tokens unknown, each takes an estimate from its text: 9 characters, 3 tokens.
        assert await stored(repos, orphan) == replace(
            orphan,
            status=MessageStatus.FAILED,
            owner=None,
            content="nine char",
            completion_tokens=3,
        )
        assert await stored(repos, stopped_orphan) == replace(
            stopped_orphan, status=MessageStatus.STOPPED, owner=None, completion_tokens=0
        )
        assert await stored(repos, writing) == writing
        assert await stored(repos, stopped) == replace(stopped, status=MessageStatus.STOPPED)
        assert await repos.messages.fail_orphaned() == []
        # Its owner, back after all, can no longer store an end.
        assert await finish(repos, orphan.id) is None
        _, replacement = await start(repos, chats[2], owner=live)  # the chat is free again

    assert await repos.messages.fail_orphaned() == [writing.id, replacement.id]
    assert (await stored(repos, writing)).status is MessageStatus.FAILED
    assert (await stored(repos, stopped)).owner is None


# --- files -------------------------------------------------------------------


async def test_files_belong_to_their_owner(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    upload = await add_file(repos, ann, "abc.png", size=1234)
    assert (upload.user_id, upload.filename, upload.original_filename) == (
        ann.id,
        "abc.png",
        "original-abc.png",
    )
    assert (upload.content_type, upload.file_size) == ("image/png", 1234)
    assert_utc(upload.created_at)
    assert await repos.files.get(ann.id, upload.id) == upload
    assert await repos.files.get(bob.id, upload.id) is None
    assert await repos.files.get_by_filename("abc.png") == upload  # whoever owns it
    assert await repos.files.get_by_filename("ABC.png") is None
    assert await repos.files.delete(bob.id, upload.id) is None
    assert await repos.files.get(ann.id, upload.id) == upload


async def test_filenames_are_unique(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    await add_file(repos, ann, "abc.png")
    with pytest.raises(ConflictError) as caught:
        await add_file(repos, bob, "abc.png")
    assert caught.value.field == "filename"
    with pytest.raises(InvalidInputError):
        await add_file(repos, bob, "negative.png", size=-1)


async def test_files_list_newest_first_and_sizes_add_up(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    assert await repos.files.total_size(ann.id) == 0
    mine = [await add_file(repos, ann, f"{n}.png", size=100 * n) for n in range(1, 6)]
    await add_file(repos, bob, "bob.png", size=7)
    newest_first = ids(mine[::-1])
    assert ids(await repos.files.list(ann.id, limit=10, before=None)) == newest_first
    assert ids(await repos.files.list(ann.id, limit=2, before=None)) == newest_first[:2]
    assert ids(await repos.files.list(ann.id, limit=2, before=mine[3].id)) == newest_first[2:4]
    assert await repos.files.list(ann.id, limit=2, before=mine[0].id) == []
    assert await repos.files.total_size(ann.id) == 1500
    assert await repos.files.total_size(bob.id) == 7

    deleted = await repos.files.delete(ann.id, mine[1].id)
    assert deleted == mine[1]
    assert await repos.files.delete(ann.id, mine[1].id) is None
    assert await repos.files.get(ann.id, mine[1].id) is None
    assert await repos.files.total_size(ann.id) == 1300


async def test_owned_keeps_the_users_files_in_the_order_asked(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    a1, a2, a3 = [await add_file(repos, ann, f"a{n}.png") for n in range(3)]
    b1 = await add_file(repos, bob, "b1.png")
    asked = [a3.id, b1.id, a1.id, 9999, a3.id]
    assert await repos.files.owned(ann.id, asked) == [a3, a1, a3]
    assert await repos.files.owned(ann.id, []) == []
    assert await repos.files.owned(bob.id, [a2.id]) == []


def new_file(user_id: int, name: str, size: int) -> NewFileUpload:
    return NewFileUpload(
        user_id=user_id,
        filename=name,
        original_filename=name,
        content_type="image/png",
        file_size=size,
    )


async def test_add_within_quota_counts_only_the_owners_files(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    await add_file(repos, bob, "bob.png", size=1000)
    first = await repos.files.add_within_quota(new_file(ann.id, "a.png", 60), quota=100)
    assert first is not None
    assert (first.user_id, first.filename, first.file_size) == (ann.id, "a.png", 60)
    assert_utc(first.created_at)
    assert await repos.files.get(ann.id, first.id) == first
    assert await repos.files.add_within_quota(new_file(ann.id, "b.png", 41), quota=100) is None
    assert await repos.files.get_by_filename("b.png") is None
    exact = await repos.files.add_within_quota(new_file(ann.id, "c.png", 40), quota=100)
    assert exact is not None
    assert await repos.files.total_size(ann.id) == 100
    with pytest.raises(ConflictError):
        await repos.files.add_within_quota(new_file(bob.id, "a.png", 1), quota=10_000)
    with pytest.raises(NotFoundError):
        await repos.files.add_within_quota(new_file(99_999, "x.png", 1), quota=10)


async def test_of_concurrent_adds_within_quota_only_what_fits_is_kept(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    results = await asyncio.gather(
        *(
            repos.files.add_within_quota(new_file(ann.id, f"{n}.png", 10), quota=35)
            for n in range(12)
        )
    )
    assert sum(result is not None for result in results) == 3
    assert await repos.files.total_size(ann.id) == 30


# --- one-time codes ----------------------------------------------------------


def new_otp(
    repos: Repos, email: str, purpose: OtpPurpose = EMAIL, **expiry: float
) -> NewOtpVerification:
    expires_at = repos.clock.now() + timedelta(**(expiry or {"minutes": 10}))
    return NewOtpVerification(email=email, purpose=purpose, code_hash="hash", expires_at=expires_at)


async def test_the_latest_code_replaces_earlier_ones(repos: Repos) -> None:
    assert await repos.otps.latest("ann@example.com", EMAIL) is None
    first = await repos.otps.add(new_otp(repos, "ann@example.com"))
    assert (first.email, first.purpose, first.code_hash, first.attempts) == (
        "ann@example.com",
        EMAIL,
        "hash",
        0,
    )
    assert first.consumed_at is None
    assert_utc(first.created_at, first.expires_at)
    reset = await repos.otps.add(new_otp(repos, "ann@example.com", RESET))
    second = await repos.otps.add(new_otp(repos, "ANN@example.com"))
    assert await repos.otps.latest("Ann@Example.com", EMAIL) == second
    assert await repos.otps.latest("ann@example.com", RESET) == reset
    assert await repos.otps.latest("bob@example.com", EMAIL) is None
    # The earlier code of that purpose is spent; the other purpose's is not.
    assert await repos.otps.consume(first.id, repos.clock.now()) is False
    assert await repos.otps.consume(reset.id, repos.clock.now()) is True


async def issue_times(repos: Repos, email: str, since: datetime) -> list[datetime]:
    """What ``add_if_allowed`` shows its guard for ``email``; the guard refuses."""
    seen: list[datetime] = []

    def refuse(issued: Sequence[datetime]) -> None:
        seen.extend(issued)
        raise TooManyRequestsError("no", retry_after=1)

    with pytest.raises(TooManyRequestsError):
        await repos.otps.add_if_allowed(new_otp(repos, email), since=since, allow=refuse)
    return seen


async def test_codes_are_counted_by_email_since_a_time(repos: Repos) -> None:
    start = repos.clock.now() - timedelta(seconds=1)
    for email, purpose in (
        ("ann@example.com", EMAIL),
        ("ANN@example.com", RESET),
        ("b@x.io", EMAIL),
    ):
        await repos.otps.add(new_otp(repos, email, purpose))
    issued = await issue_times(repos, "ann@EXAMPLE.com", start)
    assert len(issued) == 2
    assert issued == sorted(issued)
    assert all(moment.tzinfo is not None and moment >= start for moment in issued)
    assert len(await issue_times(repos, "b@x.io", start)) == 1
    assert await issue_times(repos, "ann@example.com", start + timedelta(hours=1)) == []
    assert await issue_times(repos, "nobody@example.com", start) == []
    # A refusal stores nothing.
    assert await repos.otps.latest("nobody@example.com", EMAIL) is None


async def test_a_code_is_added_when_its_guard_allows(repos: Repos) -> None:
    start = repos.clock.now() - timedelta(seconds=1)
    first = await repos.otps.add_if_allowed(
        new_otp(repos, "ann@example.com"), since=start, allow=lambda issued: None
    )
    assert await repos.otps.latest("ann@example.com", EMAIL) == first
    second = await repos.otps.add_if_allowed(
        new_otp(repos, "ann@example.com"), since=start, allow=lambda issued: None
    )
    assert await repos.otps.latest("ann@example.com", EMAIL) == second
    assert await repos.otps.consume(first.id, repos.clock.now()) is False  # retired


async def test_concurrent_guarded_adds_for_one_email_are_serialised(repos: Repos) -> None:
    """Every guard sees the codes stored before it, whatever the purpose or
    letter case: a guard allowing one code at a time lets exactly one through."""
    start = repos.clock.now() - timedelta(seconds=1)

    def only_the_first(issued: Sequence[datetime]) -> None:
        if issued:
            raise TooManyRequestsError("one is enough", retry_after=1)

    async def attempt(n: int) -> bool:
        email = "ann@example.com" if n % 2 else "ANN@Example.COM"
        otp = new_otp(repos, email, RESET if n % 3 else EMAIL)
        try:
            await repos.otps.add_if_allowed(otp, since=start, allow=only_the_first)
        except TooManyRequestsError:
            return False
        return True

    # Warm the pool first, so the attempts really run side by side.
    await asyncio.gather(*(repos.otps.latest("warm@example.com", EMAIL) for _ in range(20)))
    results = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sum(results) == 1
    assert len(await issue_times(repos, "ann@example.com", start)) == 1


async def test_wrong_tries_are_counted(repos: Repos) -> None:
    otp = await repos.otps.add(new_otp(repos, "ann@example.com"))
    assert [await repos.otps.record_attempt(otp.id) for _ in range(3)] == [1, 2, 3]
    latest = await repos.otps.latest("ann@example.com", EMAIL)
    assert latest is not None
    assert latest.attempts == 3
    assert not latest.is_usable(repos.clock.now(), max_attempts=3)
    with pytest.raises(NotFoundError):
        await repos.otps.record_attempt(otp.id + 1000)


async def test_a_code_is_consumed_once(repos: Repos) -> None:
    otp = await repos.otps.add(new_otp(repos, "ann@example.com"))
    at = repos.clock.now()
    assert await repos.otps.consume(otp.id, at) is True
    assert await repos.otps.consume(otp.id, at + timedelta(seconds=1)) is False
    latest = await repos.otps.latest("ann@example.com", EMAIL)
    assert latest is not None
    assert latest.consumed_at == at
    assert_utc(latest.consumed_at)
    assert await repos.otps.consume(otp.id + 1000, at) is False


async def test_of_concurrent_consumes_exactly_one_wins(repos: Repos) -> None:
    otp = await repos.otps.add(new_otp(repos, "ann@example.com"))
    results = await asyncio.gather(
        *(repos.otps.consume(otp.id, repos.clock.now()) for _ in range(5))
    )
    assert sorted(results) == [False, False, False, False, True]


async def test_codes_can_be_deleted_and_purged(repos: Repos) -> None:
    doomed = await repos.otps.add(new_otp(repos, "bob@example.com"))
    await repos.otps.delete(doomed.id)
    assert await repos.otps.latest("bob@example.com", EMAIL) is None
    await repos.otps.delete(doomed.id)  # already gone: nothing happens

    await repos.otps.add(new_otp(repos, "a@example.com", minutes=-30))
    await repos.otps.add(new_otp(repos, "b@example.com", minutes=-20))
    live = await repos.otps.add(new_otp(repos, "c@example.com", minutes=10))
    assert await repos.otps.purge_expired(repos.clock.now() - timedelta(minutes=25)) == 1
    assert await repos.otps.purge_expired(repos.clock.now()) == 1
    assert await repos.otps.purge_expired(repos.clock.now()) == 0
    assert await repos.otps.latest("a@example.com", EMAIL) is None
    assert await repos.otps.latest("c@example.com", EMAIL) == live


# --- sessions ----------------------------------------------------------------


async def open_session(repos: Repos, user: User, **life: float) -> UserSession:
    expires_at = repos.clock.now() + timedelta(**(life or {"days": 30}))
    return await repos.sessions.add(
        NewUserSession(user_id=user.id, refresh_token_hash="t0", expires_at=expires_at)
    )


async def test_ended_sessions_are_purged_and_live_ones_kept(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    now = repos.clock.now()
    expired_long_ago = await open_session(repos, ann, days=-10)
    expired_lately = await open_session(repos, ann, days=-1)
    revoked_long_ago = await open_session(repos, ann, days=30)
    assert await repos.sessions.revoke(revoked_long_ago.id, now - timedelta(days=9))
    revoked_lately = await open_session(repos, ann, days=30)
    assert await repos.sessions.revoke(revoked_lately.id, now)
    live = await open_session(repos, ann, days=30)

    assert await repos.sessions.purge_ended(now - timedelta(days=5)) == 2
    gone = [expired_long_ago, revoked_long_ago]
    kept = [expired_lately, revoked_lately, live]
    assert [await repos.sessions.get(s.id) for s in gone] == [None, None]
    assert all([await repos.sessions.get(s.id) is not None for s in kept])
    assert await repos.sessions.purge_ended(now - timedelta(days=5)) == 0


async def test_a_new_session_is_live(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    expires_at = repos.clock.now() + timedelta(days=30)
    session = await repos.sessions.add(
        NewUserSession(
            user_id=ann.id,
            refresh_token_hash="t0",
            expires_at=expires_at,
            user_agent="curl/8",
            ip="203.0.113.9",
        )
    )
    assert (session.user_id, session.refresh_token_hash, session.user_agent, session.ip) == (
        ann.id,
        "t0",
        "curl/8",
        "203.0.113.9",
    )
    assert (session.expires_at, session.revoked_at) == (expires_at, None)
    assert session.created_at == session.last_used_at
    assert_utc(session.created_at, session.last_used_at, session.expires_at)
    assert session.is_live(repos.clock.now())
    assert await repos.sessions.get(session.id) == session
    assert await repos.sessions.get(session.id + 1000) is None


async def test_a_session_is_read_with_its_current_user(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    session = await open_session(repos, ann)
    assert await repos.sessions.get_with_user(session.id) == (session, ann)
    demoted = await repos.users.update(ann.id, UserChanges(is_active=False))
    await repos.sessions.revoke(session.id, repos.clock.now())
    found = await repos.sessions.get_with_user(session.id)
    assert found is not None
    assert found[1] == demoted
    assert found[0].revoked_at is not None
    assert await repos.sessions.get_with_user(session.id + 1000) is None


async def test_only_live_sessions_are_listed_newest_first(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    first = await open_session(repos, ann)
    short = await open_session(repos, ann, minutes=5)
    revoked = await open_session(repos, ann)
    last = await open_session(repos, ann)
    await open_session(repos, bob)
    assert await repos.sessions.revoke(revoked.id, repos.clock.now())
    now = repos.clock.now()
    assert ids(await repos.sessions.list_live(ann.id, now)) == [last.id, short.id, first.id]
    later = now + timedelta(minutes=5)  # expiry is exclusive
    assert ids(await repos.sessions.list_live(ann.id, later)) == [last.id, first.id]


async def test_rotate_swaps_the_token_only_from_the_expected_one(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    session = await open_session(repos, ann, minutes=10)
    now = repos.clock.now() + timedelta(minutes=1)
    assert not await repos.sessions.rotate(
        session.id, expected_hash="wrong", new_hash="t1", now=now
    )
    assert await repos.sessions.rotate(session.id, expected_hash="t0", new_hash="t1", now=now)
    rotated = await repos.sessions.get(session.id)
    assert rotated is not None
    assert (rotated.refresh_token_hash, rotated.last_used_at) == ("t1", now)
    assert not await repos.sessions.rotate(session.id, expected_hash="t0", new_hash="t2", now=now)
    expired = now + timedelta(minutes=10)
    assert not await repos.sessions.rotate(
        session.id, expected_hash="t1", new_hash="t2", now=expired
    )
    assert await repos.sessions.revoke(session.id, now)
    assert not await repos.sessions.rotate(session.id, expected_hash="t1", new_hash="t2", now=now)
    assert not await repos.sessions.rotate(
        session.id + 1000, expected_hash="t1", new_hash="t2", now=now
    )


async def test_of_concurrent_rotations_exactly_one_wins(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    session = await open_session(repos, ann)
    now = repos.clock.now()
    results = await asyncio.gather(
        *(
            repos.sessions.rotate(session.id, expected_hash="t0", new_hash=f"t{n}", now=now)
            for n in range(1, 6)
        )
    )
    assert sorted(results) == [False, False, False, False, True]
    winner = results.index(True) + 1
    rotated = await repos.sessions.get(session.id)
    assert rotated is not None
    assert rotated.refresh_token_hash == f"t{winner}"


async def test_revoke_ends_a_live_session_once(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    session = await open_session(repos, ann, minutes=10)
    now = repos.clock.now()
    assert await repos.sessions.revoke(session.id, now) is True
    assert await repos.sessions.revoke(session.id, now) is False
    revoked = await repos.sessions.get(session.id)
    assert revoked is not None
    assert revoked.revoked_at == now
    assert_utc(revoked.revoked_at)
    expired = await open_session(repos, ann, minutes=1)
    assert await repos.sessions.revoke(expired.id, now + timedelta(minutes=2)) is False
    assert await repos.sessions.revoke(session.id + 1000, now) is False


async def test_revoke_all_spares_the_excepted_session_and_other_users(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    keep, drop1, drop2 = [await open_session(repos, ann) for _ in range(3)]
    await repos.sessions.revoke(drop2.id, repos.clock.now())
    await open_session(repos, ann, minutes=-1)  # already expired
    bobs = await open_session(repos, bob)
    now = repos.clock.now()
    assert await repos.sessions.revoke_all(ann.id, now, except_id=keep.id) == 1
    assert ids(await repos.sessions.list_live(ann.id, now)) == [keep.id]
    assert ids(await repos.sessions.list_live(bob.id, now)) == [bobs.id]
    dropped = await repos.sessions.get(drop1.id)
    assert dropped is not None
    assert dropped.revoked_at == now
    assert await repos.sessions.revoke_all(ann.id, now) == 1
    assert await repos.sessions.list_live(ann.id, now) == []
    assert await repos.sessions.revoke_all(ann.id, now) == 0


async def test_touch_records_the_latest_use_of_a_session(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    session = await open_session(repos, ann)
    used = repos.clock.now() + timedelta(minutes=3)
    await repos.sessions.touch(session.id, used)
    await repos.sessions.touch(session.id, used - timedelta(minutes=1))
    touched = await repos.sessions.get(session.id)
    assert touched is not None
    assert touched.last_used_at == used
    assert touched.refresh_token_hash == session.refresh_token_hash
    await repos.sessions.touch(session.id + 1000, used)


# --- the schema itself (PostgreSQL only) --------------------------------------


@pytest.mark.postgres
async def test_deleting_a_user_cascades_and_checks_hold(database: Database) -> None:
    users = PostgresUserRepository(database)
    chats = PostgresChatRepository(database)
    user = await users.add(NewUser(email="a@example.com", username="a", password_hash="h"))
    chat = await chats.add(NewChat(user_id=user.id, model="m"))
    await PostgresMessageRepository(database).add(
        NewMessage(chat_id=chat.id, user_id=user.id, role=MessageRole.USER, content="hello there")
    )
    async with database.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE chats SET message_count = -1")
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE messages SET role = 'system'")
        found = await conn.execute(
            "SELECT count(*) AS n FROM messages"
            " WHERE search_vector @@ websearch_to_tsquery('english', 'HELLO')"
        )
        assert await found.fetchone() == {"n": 1}
        await conn.execute("DELETE FROM users")
        left = await conn.execute(
            "SELECT (SELECT count(*) FROM chats) + (SELECT count(*) FROM messages) AS n"
        )
        assert await left.fetchone() == {"n": 0}


# --- migrations (PostgreSQL only) ---------------------------------------------

OUR_TABLES = {"users", "chats", "messages", "file_uploads", "otp_verifications", "user_sessions"}


def tables_in(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows} & OUR_TABLES


@pytest.fixture
def empty_database_url(pg_server_url: str, pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    name = unique_dbname("gemini_empty")
    create_database(pg_admin, name)
    try:
        yield url_with_dbname(pg_server_url, name)
    finally:
        drop_database(pg_admin, name)


@pytest.mark.postgres
def test_migrations_apply_roll_back_and_apply_again(empty_database_url: str) -> None:
    url = empty_database_url
    every = [state.id for state in migrations.status(url)]
    assert every
    assert not any(state.applied for state in migrations.status(url))
    assert migrations.apply(url) == every
    assert all(state.applied for state in migrations.status(url))
    assert tables_in(url) == OUR_TABLES
    assert migrations.apply(url) == []

    assert migrations.rollback(url, count=len(every)) == every[::-1]
    assert not any(state.applied for state in migrations.status(url))
    assert tables_in(url) == set()
    with psycopg.connect(url) as conn:
        # Indexes and constraints went with their tables.
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relname ~ '^(users|chats|messages|file_uploads"
            "|otp_verifications|user_sessions)_'"
        ).fetchone()
        assert leftovers == (0,)
    assert migrations.apply(url) == every
    assert tables_in(url) == OUR_TABLES


@pytest.mark.postgres
def test_concurrent_migrations_apply_once(empty_database_url: str) -> None:
    barrier = threading.Barrier(2)

    def apply() -> list[str]:
        barrier.wait()
        return migrations.apply(empty_database_url)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: apply(), range(2)))
    every = [state.id for state in migrations.status(empty_database_url)]
    assert sorted(results) == [[], every]
    assert all(state.applied for state in migrations.status(empty_database_url))
    with psycopg.connect(empty_database_url) as conn:
        applied = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
    assert applied == (len(every),)


def test_url_with_dbname_handles_tcp_and_socket_urls() -> None:
    assert (
        url_with_dbname("postgresql://u:p@db.example:5433/postgres?sslmode=require", "t1")
        == "postgresql://u:p@db.example:5433/t1?sslmode=require"
    )
    assert (
        url_with_dbname("postgresql://postgres:@/postgres?host=/tmp/gmpg1/x", "t2")
        == "postgresql://postgres:@/t2?host=/tmp/gmpg1/x"
    )
    assert url_with_dbname("postgresql://h/db?dbname=other&host=/s", "t3") == (
        "postgresql://h/t3?host=/s"
    )
    assert dbname_of(url_with_dbname("postgresql://h", "t4")) == "t4"


# --- statistics ----------------------------------------------------------------


async def test_counts_leave_out_deleted_accounts_and_what_they_own(repos: Repos) -> None:
    now = repos.clock.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    empty = await repos.stats.counts(active_since=midnight, created_since=now - timedelta(days=7))
    assert (empty.total_users, empty.total_chats, empty.total_messages) == (0, 0, 0)

    ann, bob, cid = [await add_user(repos, name) for name in ("ann", "bob", "cid")]
    for owner, messages in ((ann, 3), (bob, 2)):
        chat = await add_chat(repos, owner)
        for _ in range(messages):
            await say(repos, chat)
    await repos.users.update(ann.id, UserChanges(last_login_at=now))
    await repos.users.touch(bob.id, now)
    await repos.users.update(cid.id, UserChanges(last_login_at=midnight - timedelta(seconds=1)))

    counts = await repos.stats.counts(active_since=midnight, created_since=now - timedelta(days=7))
    assert (counts.total_users, counts.total_chats, counts.total_messages) == (3, 2, 5)
    assert (counts.active_users, counts.new_users) == (2, 3)
    later = await repos.stats.counts(
        active_since=midnight, created_since=now + timedelta(minutes=1)
    )
    assert later.new_users == 0

    await repos.users.update(bob.id, UserChanges(deleted_at=now))
    counts = await repos.stats.counts(active_since=midnight, created_since=now - timedelta(days=7))
    assert (counts.total_users, counts.total_chats, counts.total_messages) == (2, 1, 3)
    assert counts.active_users == 1


# --- message search ----------------------------------------------------------------


async def test_search_finds_the_users_messages_with_every_word_best_first(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    travel = await add_chat(repos, ann, "Travel")
    untitled = await add_chat(repos, ann)
    theirs = await add_chat(repos, bob, "Bob's")
    once = await say(repos, travel, "A trip to Rome next spring")
    many = await say(repos, untitled, "Rome, Rome and again Rome: the trip of trips")
    await say(repos, travel, "Paris in the fall")
    await say(repos, travel, "Rome alone, without the other word")
    await say(repos, theirs, "My own trip to Rome")

    hits = await repos.messages.search(ann.id, "ROME trip", limit=10)
    assert [hit.message.id for hit in hits] == [many, once]
    assert [hit.chat_title for hit in hits] == [None, "Travel"]
    assert hits[1].message == await repos.messages.get(ann.id, travel.id, once)
    assert "**Rome**" in hits[1].snippet
    assert "**trip**" in hits[1].snippet
    assert await repos.messages.search(ann.id, "rome trip", limit=1) == hits[:1]
    assert [h.message.id for h in await repos.messages.search(bob.id, "rome", limit=10)] == [
        (await thread(repos, bob.id, theirs.id, limit=1))[0].id
    ]
    assert await repos.messages.search(ann.id, "Berlin", limit=10) == []


async def test_search_ties_go_to_the_newest_and_deleted_chats_are_gone(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat, other = await add_chat(repos, ann, "one"), await add_chat(repos, ann, "two")
    older = await say(repos, chat, "rome is far")
    newer = await say(repos, other, "rome is old")
    assert ids([h.message for h in await repos.messages.search(ann.id, "rome", limit=10)]) == [
        newer,
        older,
    ]
    await repos.chats.delete(ann.id, other.id)
    assert ids([h.message for h in await repos.messages.search(ann.id, "rome", limit=10)]) == [
        older
    ]


async def test_search_ranks_only_the_newest_matches(
    repos: Repos, monkeypatch: pytest.MonkeyPatch
) -> None:
    for adapter in (memory_chats, postgres_chats):
        monkeypatch.setattr(adapter, "SEARCH_WINDOW", 3)
    ann = await add_user(repos, "ann")
    chat = await add_chat(repos, ann)
    best_but_old = await say(repos, chat, "rome rome rome rome rome")
    newest = [await say(repos, chat, f"rome number {n}") for n in range(4)]
    await say(repos, chat, "paris, newer than all of them")
    hits = await repos.messages.search(ann.id, "rome", limit=10)
    assert best_but_old not in ids([h.message for h in hits])
    assert ids([h.message for h in hits]) == newest[:0:-1]


async def test_counts_follow_chats_deleted_and_answers_added(repos: Repos) -> None:
    now = repos.clock.now()
    since = {"active_since": now, "created_since": now}
    ann = await add_user(repos, "ann")
    kept, dropped = await add_chat(repos, ann), await add_chat(repos, ann)
    await say(repos, kept)
    for _ in range(2):
        await say(repos, dropped)
    await start(repos, kept)  # a question and its answer
    counts = await repos.stats.counts(**since)
    assert (counts.total_chats, counts.total_messages) == (2, 5)
    await repos.chats.delete(ann.id, dropped.id)
    counts = await repos.stats.counts(**since)
    assert (counts.total_chats, counts.total_messages) == (1, 3)


async def test_search_takes_any_text_a_person_may_type(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chat = await add_chat(repos, ann)
    await say(repos, chat, "quotes and dashes")
    for query in ('"unbalanced', "-", "!!!", "a & b | c", "'; DROP TABLE messages; --", "()"):
        assert isinstance(await repos.messages.search(ann.id, query, limit=5), list)
    assert len(await repos.messages.search(ann.id, '"quotes" dashes', limit=5)) == 1


# --- usage and quotas ------------------------------------------------------------------


def quota_on(day: date, *, messages: int | None = None, tokens: int | None = None) -> DailyQuota:
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return DailyQuota(day=day, resets_at=midnight, retry_after=60, messages=messages, tokens=tokens)


DAY = date(2026, 3, 14)


async def test_answers_count_on_their_day_with_their_tokens(repos: Repos) -> None:
    ann, bob = await add_user(repos, "ann"), await add_user(repos, "bob")
    chats = [await add_chat(repos, ann) for _ in range(3)]
    bobs = await add_chat(repos, bob)
    _, first = await start(repos, chats[0], quota=quota_on(DAY))
    _, second = await start(repos, chats[1], quota=quota_on(DAY))
    _, next_day = await start(repos, chats[2], quota=quota_on(DAY + timedelta(days=1)))
    await start(repos, bobs, quota=quota_on(DAY))
    # Counted when started; tokens join when each ends (3 + 5 each, see finish).
    assert await repos.usage.days(ann.id, DAY, DAY) == [DailyUsage(DAY, 2, 0, 0)]
    await finish(repos, first.id)
    await finish(repos, second.id, MessageStatus.FAILED)
    await finish(repos, next_day.id)
    await finish(repos, first.id)  # an answer ends once: counted once

    assert await repos.usage.days(ann.id, DAY - timedelta(days=5), DAY + timedelta(days=5)) == [
        DailyUsage(DAY, 2, 6, 10),
        DailyUsage(DAY + timedelta(days=1), 1, 3, 5),
    ]
    assert await repos.usage.days(ann.id, DAY + timedelta(days=2), DAY + timedelta(days=9)) == []
    assert await repos.usage.days(bob.id, DAY, DAY) == [DailyUsage(DAY, 1, 0, 0)]


async def test_an_answer_without_a_quota_counts_on_the_stores_utc_day(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    await start(repos, await add_chat(repos, ann))
    today = datetime.now(UTC).date()
    found = await repos.usage.days(ann.id, today - timedelta(days=1), today + timedelta(days=1))
    # The memory store's clock started at the real time too.
    assert [(d.messages, d.tokens) for d in found] == [(1, 0)]
    assert found[0].day in {today, today - timedelta(days=1), today + timedelta(days=1)}


async def test_the_message_quota_refuses_past_its_limit_storing_nothing(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(3)]
    for chat in chats[:2]:
        await start(repos, chat, quota=quota_on(DAY, messages=2))

    with pytest.raises(QuotaExceededError) as refused:
        await start(repos, chats[2], ask(chats[2], "one more"), quota=quota_on(DAY, messages=2))
    assert (refused.value.unit, refused.value.quota, refused.value.used) == ("messages", 2, 2)
    assert refused.value.retry_after == 60
    assert refused.value.kind == "quota-exceeded"
    # Nothing of the refused send: no question, no answer, no count.
    assert (await repos.chats.get(ann.id, chats[2].id)) == chats[2]
    assert await repos.usage.days(ann.id, DAY, DAY) == [DailyUsage(DAY, 2, 0, 0)]
    # Another day, another quota.
    await start(repos, chats[2], quota=quota_on(DAY + timedelta(days=1), messages=2))


async def test_the_token_quota_refuses_once_the_days_tokens_reach_it(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(3)]
    _, first = await start(repos, chats[0], quota=quota_on(DAY, tokens=16))
    # A running answer does not hold the token quota: only tokens spent do.
    _, second = await start(repos, chats[1], quota=quota_on(DAY, tokens=16))
    await finish(repos, first.id)
    await finish(repos, second.id)  # 16 tokens: the quota is reached

    with pytest.raises(QuotaExceededError) as refused:
        await start(repos, chats[2], quota=quota_on(DAY, tokens=16))
    assert (refused.value.unit, refused.value.quota, refused.value.used) == ("tokens", 16, 16)
    await start(repos, chats[2], quota=quota_on(DAY, tokens=17))


async def test_parallel_starts_never_pass_the_message_quota(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    chats = [await add_chat(repos, ann) for _ in range(8)]
    results = await asyncio.gather(
        *(start(repos, chat, quota=quota_on(DAY, messages=3)) for chat in chats),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert (len(started), len(refused)) == (3, 5)
    assert await repos.usage.days(ann.id, DAY, DAY) == [DailyUsage(DAY, 3, 0, 0)]


async def test_usage_by_user_ranks_by_tokens_and_pages(repos: Repos) -> None:
    users = [await add_user(repos, name) for name in ("ann", "bob", "cat", "dan")]
    ann, bob, cat, dan = users
    spent = {ann: [1], bob: [1, 1, 1], cat: [1, 1, 1]}  # answers per user, finished
    for user, answers in spent.items():
        for _ in answers:
            _, answer = await start(repos, await add_chat(repos, user), quota=quota_on(DAY))
            await finish(repos, answer.id)
    await start(repos, await add_chat(repos, cat), quota=quota_on(DAY))  # still running
    # dan's usage is outside the range.
    await start(repos, await add_chat(repos, dan), quota=quota_on(DAY - timedelta(days=1)))

    page = await repos.usage.by_user(DAY, DAY, offset=0, limit=2)
    assert page.total == 3
    # cat and bob spent 24 tokens each; cat has one more answer (running).
    assert [(u.user.id, u.messages, u.prompt_tokens, u.completion_tokens) for u in page.items] == [
        (cat.id, 4, 9, 15),
        (bob.id, 3, 9, 15),
    ]
    assert page.items[0].user == await repos.users.get(cat.id)
    rest = await repos.usage.by_user(DAY, DAY, offset=2, limit=2)
    assert ([u.user.id for u in rest.items], rest.total) == ([ann.id], 3)
    empty = await repos.usage.by_user(
        DAY + timedelta(days=1), DAY + timedelta(days=3), offset=0, limit=5
    )
    assert (empty.items, empty.total) == ([], 0)
    with pytest.raises(InvalidInputError):
        await repos.usage.by_user(DAY, DAY, offset=-1, limit=5)


async def test_a_users_own_quotas_are_set_and_cleared(repos: Repos) -> None:
    ann = await add_user(repos, "ann")
    assert (ann.daily_token_quota, ann.daily_message_quota) == (None, None)
    set_ = await repos.users.update(
        ann.id, UserChanges(daily_token_quota=5000, daily_message_quota=7)
    )
    assert (set_.daily_token_quota, set_.daily_message_quota) == (5000, 7)
    assert await repos.users.get(ann.id) == set_
    kept = await repos.users.update(ann.id, UserChanges(full_name="Ann"))
    assert (kept.daily_token_quota, kept.daily_message_quota) == (5000, 7)
    cleared = await repos.users.update(ann.id, UserChanges(clear_daily_message_quota=True))
    assert (cleared.daily_token_quota, cleared.daily_message_quota) == (5000, None)
    with pytest.raises(InvalidInputError):
        await repos.users.update(ann.id, UserChanges(daily_message_quota=-1))


async def test_usage_by_user_over_any_range_is_the_sum_of_its_days(repos: Repos) -> None:
    """PostgreSQL sums long ranges from spans of days kept beside the days; any
    range, aligned or not, must come to what its days add up to."""
    users = [await add_user(repos, name) for name in ("ann", "bob", "cat")]
    rng = random.Random(7)
    start_day = date(2025, 12, 20)
    for n in range(60):
        user = users[n % 3]
        day = start_day + timedelta(days=rng.randrange(420))
        _, answer = await start(repos, await add_chat(repos, user), quota=quota_on(day))
        if rng.random() < 0.8:
            await repos.messages.finish_answer(
                answer.id,
                status=MessageStatus.COMPLETE,
                content="x",
                prompt_tokens=rng.randrange(1, 100),
                completion_tokens=rng.randrange(1, 100),
            )
    for _ in range(25):
        first = start_day + timedelta(days=rng.randrange(-5, 400))
        last = first + timedelta(days=rng.randrange(0, 366))
        expected = {}
        for user in users:
            days = await repos.usage.days(user.id, first, last)
            if days:
                expected[user.id] = (
                    sum(d.messages for d in days),
                    sum(d.prompt_tokens for d in days),
                    sum(d.completion_tokens for d in days),
                )
        page = await repos.usage.by_user(first, last, offset=0, limit=10)
        found = {u.user.id: (u.messages, u.prompt_tokens, u.completion_tokens) for u in page.items}
        assert (found, page.total) == (expected, len(expected)), (first, last)
