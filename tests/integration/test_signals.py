"""Signals between the processes of one deployment, and each process's answer
owner key, on real servers.

One contract for ``AnswerSignals``, run in memory, on PostgreSQL's
LISTEN/NOTIFY and (when ``REDIS_URL`` is set) on Redis pub/sub: several
instances play several processes. Then what only a real server can do to a
connection: kill it, and see the instance take up where it was.

Messages are awaited as they arrive (never for a set time); a server's state
(a new listening session, a lock taken again) is polled until a generous
deadline, which only a failure reaches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from redis.asyncio import Redis

from adapters.memory import InMemoryAnswerSignals, InMemorySignalHub
from adapters.postgres._common import ANSWER_OWNER_LOCK_CLASS
from adapters.postgres.owners import PostgresAnswerOwner
from adapters.postgres.signals import PostgresAnswerSignals
from adapters.redis_signals import RedisAnswerSignals
from gemini_core.errors import UnavailableError
from gemini_core.ports import MAX_SIGNAL_BYTES, AnswerSignals

REDIS_URL = os.environ.get("REDIS_URL", "")
DEADLINE = 30.0  # seconds; far beyond what any step takes, reached only on failure
POLL = 0.05

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL")
postgres = pytest.param("postgres", marks=pytest.mark.postgres)
redis = pytest.param("redis", marks=needs_redis)


class Inbox:
    """A receiver that keeps what it is given and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self._arrived.set()

    def starting(self, prefix: str) -> list[str]:
        return [message for message in self.messages if message.startswith(prefix)]

    async def until(self, done: Callable[[list[str]], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not done(self.messages):
                self._arrived.clear()
                await self._arrived.wait()

    async def until_count(self, prefix: str, count: int) -> list[str]:
        await self.until(lambda _: len(self.starting(prefix)) >= count)
        return self.starting(prefix)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll a server's state until ``check`` holds. (No event tells of a new
    session on the server; the pace of polling decides nothing.)"""
    try:
        async with asyncio.timeout(DEADLINE):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(POLL)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


# --- deployments: where the processes' signals meet -------------------------------------


class Deployment:
    """Hands out the signals of new processes, and closes them at the end."""

    def __init__(self) -> None:
        self.opened: list[AnswerSignals] = []

    def _new(self) -> AnswerSignals:
        raise NotImplementedError

    async def process(
        self, receive: Callable[[str], None] | None = None
    ) -> tuple[AnswerSignals, Inbox]:
        """The signals of one more process, started, with their inbox (or
        with ``receive`` and an inbox left empty)."""
        signals = self._new()
        self.opened.append(signals)
        inbox = Inbox()
        await signals.start(receive or inbox)
        return signals, inbox

    async def kill_listeners(self) -> None:
        """Kill every process's listening connection on the server, and return
        once each has listened again on a fresh one."""
        raise NotImplementedError

    async def kill_senders(self) -> None:
        """Kill every process's sending connection, and return once the server
        has let go of them."""
        raise NotImplementedError

    async def aclose(self) -> None:
        for signals in self.opened:
            await signals.aclose()


class MemoryDeployment(Deployment):
    def __init__(self) -> None:
        super().__init__()
        self.hub = InMemorySignalHub()

    def _new(self) -> AnswerSignals:
        return InMemoryAnswerSignals(self.hub)


class PostgresDeployment(Deployment):
    # Each test has a database of its own; these look at nothing else.
    _BACKENDS = """
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'gemini-signals'
          AND state = 'idle' AND query LIKE %(query)s
    """

    def __init__(self, url: str, admin: psycopg.AsyncConnection[Any]) -> None:
        super().__init__()
        self.url = url
        self.admin = admin

    def _new(self) -> AnswerSignals:
        return PostgresAnswerSignals(self.url)

    async def _backends(self, query: str) -> set[int]:
        cursor = await self.admin.execute(self._BACKENDS, {"query": query})
        return {pid for (pid,) in await cursor.fetchall()}

    async def _terminate(self, pids: set[int]) -> None:
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid",
            {"pids": sorted(pids)},
        )

    async def kill_listeners(self) -> None:
        old = await self._backends("LISTEN %")
        assert len(old) == len(self.opened)
        await self._terminate(old)

        async def listening_again() -> bool:
            # Idle after LISTEN: the LISTEN has executed.
            new = await self._backends("LISTEN %")
            return len(new) == len(old) and not new & old

        await eventually(listening_again, "every process listens again")

    async def kill_senders(self) -> None:
        old = await self._backends("SELECT pg_notify%")
        assert old
        await self._terminate(old)

        async def gone() -> bool:
            return not await self._backends("SELECT pg_notify%")

        await eventually(gone, "the sending sessions end")


class RedisDeployment(Deployment):
    def __init__(self, admin: Redis) -> None:
        super().__init__()
        self.channel = f"test:signals:{uuid.uuid4().hex}"
        self.admin = admin
        self.names: list[str] = []

    def _new(self) -> AnswerSignals:
        name = f"test-signals-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return RedisAnswerSignals(REDIS_URL, self.channel, client_name=name)

    async def _clients(self, kind: str) -> dict[str, dict[str, Any]]:
        clients = await self.admin.client_list(_type=kind)
        return {client["id"]: client for client in clients if client["name"] in self.names}

    async def kill_listeners(self) -> None:
        old = await self._clients("pubsub")
        assert len(old) == len(self.opened)
        for client_id in old:
            await self.admin.client_kill_filter(_id=client_id, _type="pubsub")

        async def subscribed_again() -> bool:
            new = await self._clients("pubsub")
            return (
                len(new) == len(old)
                and not new.keys() & old.keys()
                and all(client["sub"] == "1" for client in new.values())
            )

        await eventually(subscribed_again, "every process subscribes again")

    async def kill_senders(self) -> None:
        old = await self._clients("normal")
        assert old
        for client_id in old:
            await self.admin.client_kill_filter(_id=client_id, _type="normal")

        async def gone() -> bool:
            return not (await self._clients("normal")).keys() & old.keys()

        await eventually(gone, "the sending connections end")


@pytest.fixture
async def admin_connection(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the test's own to its database, for looking and killing."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    yield conn
    await conn.close()


async def _deployment(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    if kind == "memory":
        deployment: Deployment = MemoryDeployment()
        yield deployment
        await deployment.aclose()
    elif kind == "postgres":
        url = request.getfixturevalue("database_url")
        admin = await psycopg.AsyncConnection.connect(url, autocommit=True)
        deployment = PostgresDeployment(url, admin)
        yield deployment
        await deployment.aclose()
        await admin.close()
    else:
        client = Redis.from_url(REDIS_URL, decode_responses=True)
        deployment = RedisDeployment(client)
        yield deployment
        await deployment.aclose()
        await client.aclose()


@pytest.fixture(params=["memory", postgres, redis])
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    async for value in _deployment(request.param, request):
        yield value


@pytest.fixture(params=[postgres, redis])
async def server_deployment(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    async for value in _deployment(request.param, request):
        yield value


def unreachable(kind: str) -> AnswerSignals:
    """Signals pointed at a port nobody listens on."""
    if kind == "postgres":
        return PostgresAnswerSignals("postgresql://postgres@127.0.0.1:1/postgres")
    return RedisAnswerSignals("redis://127.0.0.1:1/0", "test:nowhere")


def largest_message() -> str:
    """Exactly ``MAX_SIGNAL_BYTES`` of UTF-8, in characters of one to four bytes."""
    unit = "aé€😀"  # 1 + 2 + 3 + 4 bytes
    body = unit * (MAX_SIGNAL_BYTES // 10)
    message = body + "é" * ((MAX_SIGNAL_BYTES - len(body.encode())) // 2)
    message += "a" * (MAX_SIGNAL_BYTES - len(message.encode()))
    assert len(message.encode()) == MAX_SIGNAL_BYTES
    return message


# --- the contract, in memory and on both servers -------------------------------------


async def test_every_process_receives_every_message_in_the_order_each_sent_them(
    deployment: Deployment,
) -> None:
    (first, first_inbox), (second, second_inbox) = [await deployment.process() for _ in range(2)]
    sent_by_first = [f"first {i}" for i in range(200)]
    sent_by_second = [f"second {i}" for i in range(200)]

    async def send_all(signals: AnswerSignals, messages: list[str]) -> None:
        for message in messages:
            await signals.send(message)

    await asyncio.gather(send_all(first, sent_by_first), send_all(second, sent_by_second))
    for inbox in (first_inbox, second_inbox):
        assert await inbox.until_count("first ", 200) == sent_by_first
        assert await inbox.until_count("second ", 200) == sent_by_second
        assert len(inbox.messages) == 400


async def test_what_is_sent_as_soon_as_start_returns_arrives(deployment: Deployment) -> None:
    sender, _ = await deployment.process()
    for attempt in range(5):
        _, inbox = await deployment.process()
        await sender.send(f"hello {attempt}")
        assert await inbox.until_count("hello ", 1) == [f"hello {attempt}"]


async def test_a_message_of_the_largest_size_arrives_whole(deployment: Deployment) -> None:
    (sender, sender_inbox), (_, inbox) = [await deployment.process() for _ in range(2)]
    message = largest_message()
    await sender.send(message)
    await sender.send("after")
    for box in (inbox, sender_inbox):
        await box.until(lambda messages: "after" in messages)
        assert box.messages == [message, "after"]


async def test_a_larger_message_or_one_with_nul_is_refused(deployment: Deployment) -> None:
    sender, inbox = await deployment.process()
    with pytest.raises(ValueError, match="bytes"):
        await sender.send(largest_message() + "a")
    with pytest.raises(ValueError, match="NUL"):
        await sender.send("a\x00b")
    await sender.send("fine")
    await inbox.until(lambda messages: bool(messages))
    assert inbox.messages == ["fine"]


async def test_a_failing_receiver_does_not_stop_the_signals(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    def receive(message: str) -> None:
        inbox(message)
        if message == "boom":
            raise RuntimeError("the receiver broke")

    signals, _ = await deployment.process(receive)
    with caplog.at_level(logging.ERROR):
        await signals.send("boom")
        await signals.send("and on")
        await inbox.until(lambda messages: "and on" in messages)
    assert inbox.messages == ["boom", "and on"]
    assert any("receiver of answer signals failed" in r.getMessage() for r in caplog.records)


async def test_aclose_stops_one_process_cleanly_and_the_others_go_on(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        (leaving, leaving_inbox), (staying, staying_inbox) = [
            await deployment.process() for _ in range(2)
        ]
        await leaving.send("before")
        await leaving_inbox.until(lambda messages: "before" in messages)
        await leaving.aclose()
        await leaving.aclose()  # twice is harmless
        with pytest.raises(UnavailableError):
            await leaving.send("from beyond")
        await staying.send("after")
        await staying.send("last")
        await staying_inbox.until(lambda messages: "last" in messages)
        assert staying_inbox.messages == ["before", "after", "last"]
        assert leaving_inbox.messages == ["before"]
        await staying.aclose()
    tasks = {task.get_name() for task in asyncio.all_tasks()}
    assert not {name for name in tasks if name.startswith("gemini-signals")}
    assert not caplog.records, [record.getMessage() for record in caplog.records]


# --- what only a server can do -----------------------------------------------------------


@pytest.mark.parametrize("kind", [postgres, redis])
async def test_an_unreachable_server_is_unavailable(kind: str) -> None:
    signals = unreachable(kind)
    with pytest.raises(UnavailableError):
        await signals.start(Inbox())
    with pytest.raises(UnavailableError):
        await signals.send("hello")
    await signals.aclose()


async def test_a_killed_listening_connection_is_replaced_and_messages_flow_again(
    server_deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = server_deployment
    (first, first_inbox), (second, second_inbox) = [await deployment.process() for _ in range(2)]
    await first.send("before")
    await second_inbox.until(lambda messages: "before" in messages)

    with caplog.at_level(logging.INFO):
        await deployment.kill_listeners()
    assert any(
        "listening again" in r.getMessage() or "subscribing again" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )

    sent = [f"after {i}" for i in range(50)]
    for message in sent:
        await first.send(message)
    await second.send("from second")
    for inbox in (first_inbox, second_inbox):
        assert await inbox.until_count("after ", 50) == sent
        await inbox.until(lambda messages: "from second" in messages)


async def test_a_killed_sending_connection_is_replaced_on_the_next_send(
    server_deployment: Deployment,
) -> None:
    deployment = server_deployment
    (sender, _), (_, inbox) = [await deployment.process() for _ in range(2)]
    await sender.send("before")
    await inbox.until(lambda messages: "before" in messages)
    await deployment.kill_senders()
    await sender.send("after")
    await inbox.until(lambda messages: "after" in messages)
    assert inbox.messages == ["before", "after"]


# --- the answer owner on PostgreSQL ----------------------------------------------------------

_OWNER_LOCKS = """
    SELECT objid::int8 AS key, pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND classid = %(lock_class)s::int8::oid
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def owner_locks(admin: psycopg.AsyncConnection[Any]) -> dict[int, int]:
    """The keys held in this database, each with the pid of the session holding it."""
    cursor = await admin.execute(_OWNER_LOCKS, {"lock_class": ANSWER_OWNER_LOCK_CLASS})
    return dict(await cursor.fetchall())


@pytest.fixture
async def owners(database_url: str) -> AsyncIterator[Callable[[], Awaitable[PostgresAnswerOwner]]]:
    started: list[PostgresAnswerOwner] = []

    async def owner() -> PostgresAnswerOwner:
        new = PostgresAnswerOwner(database_url)
        await new.start()
        started.append(new)
        return new

    yield owner
    for each in started:
        await each.aclose()


@pytest.mark.postgres
async def test_each_process_holds_a_key_of_its_own_until_it_closes(
    owners: Callable[[], Awaitable[PostgresAnswerOwner]],
    admin_connection: psycopg.AsyncConnection[Any],
) -> None:
    first, second = await owners(), await owners()
    assert first.key != second.key
    assert 0 < first.key < 2**31
    assert 0 < second.key < 2**31
    locks = await owner_locks(admin_connection)
    assert set(locks) == {first.key, second.key}
    assert locks[first.key] != locks[second.key]

    await first.aclose()
    assert set(await owner_locks(admin_connection)) == {second.key}
    assert second.key  # still readable, still held


@pytest.mark.postgres
async def test_the_key_is_unreadable_before_start(database_url: str) -> None:
    owner = PostgresAnswerOwner(database_url)
    with pytest.raises(RuntimeError):
        _ = owner.key
    await owner.aclose()


@pytest.mark.postgres
async def test_an_unreachable_database_is_unavailable_to_the_owner() -> None:
    owner = PostgresAnswerOwner("postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(UnavailableError):
        await owner.start()
    await owner.aclose()


@pytest.mark.postgres
async def test_an_owner_whose_session_is_killed_takes_its_key_again(
    owners: Callable[[], Awaitable[PostgresAnswerOwner]],
    admin_connection: psycopg.AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner, bystander = await owners(), await owners()
    before = await owner_locks(admin_connection)
    with caplog.at_level(logging.INFO):
        await admin_connection.execute(
            "SELECT pg_terminate_backend(%(pid)s)", {"pid": before[owner.key]}
        )

        async def taken_again() -> bool:
            pid = (await owner_locks(admin_connection)).get(owner.key)
            return pid is not None and pid != before[owner.key]

        await eventually(taken_again, "the owner takes its key again")
    after = await owner_locks(admin_connection)
    assert set(after) == {owner.key, bystander.key}
    assert after[bystander.key] == before[bystander.key]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"key {owner.key}" in message for message in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    await owner.aclose()
    assert set(await owner_locks(admin_connection)) == {bystander.key}
