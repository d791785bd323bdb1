"""Answers the server owns, on real servers over PostgreSQL with a model stand-in
that sends each piece only when the test lets it.

Two servers on one database play two hosts (the first with two workers behind
one port), so a resume or a stop is sure to land on a process that is not
writing the answer; each test runs with the signals on PostgreSQL's
LISTEN/NOTIFY and, when ``REDIS_URL`` is set, on Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import httpx
import psycopg
import pytest

from .api import PASSWORD
from .gemini_standin import GeminiStandIn, Reply
from .pgutil import create_database, drop_database, unique_dbname, url_with_dbname
from .server import running_server

MODEL = "gemini-test"
PIECES = ("Once", " upon", " a", " time", " there", " was", " a", " stream.")
WHOLE = "".join(PIECES)


def env_for(tmp_path: Path, database_url: str, model_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "GOOGLE_API_KEY": "test-key",
        "GEMINI_BASE_URL": model_url,
        "GEMINI_MODEL": MODEL,
        "LLM_TIMEOUT_SECONDS": "120",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class Hosts:
    first: str
    """Two workers behind one port."""
    second: str
    auth: dict[str, str]
    database_url: str


@pytest.fixture(scope="module")
def model() -> Iterator[GeminiStandIn]:
    with GeminiStandIn() as standin:
        yield standin


def add_ann(database_url: str) -> None:
    password_hash = argon2.PasswordHasher().hash(PASSWORD)  # any Argon2 hash verifies
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO users (email, username, password_hash, is_verified)"
            " VALUES ('ann@example.com', 'ann', %s, true)",
            (password_hash,),
        )


@pytest.fixture(scope="module", params=["postgres", "redis"])
def hosts(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_server_url: str,
    pg_admin: psycopg.Connection[Any],
    template_database: str,
    model: GeminiStandIn,
) -> Iterator[Hosts]:
    """Two servers on one database, shared by this module's tests (each works in
    chats of its own): started once per signal engine, they cost the module
    seconds rather than a minute."""
    signals = {"REDIS_URL": ""}
    if request.param == "redis":
        if not os.environ.get("REDIS_URL"):
            pytest.skip("REDIS_URL is not set")
        signals = {"REDIS_URL": os.environ["REDIS_URL"]}
    name = unique_dbname("gemini_hosts")
    create_database(pg_admin, name, template=template_database)
    database_url = url_with_dbname(pg_server_url, name)
    tmp_path = tmp_path_factory.mktemp("hosts")
    try:
        add_ann(database_url)
        env = env_for(tmp_path, database_url, model.url, **signals)
        with ExitStack() as stack:
            _, first = stack.enter_context(running_server(tmp_path, WORKERS="2", **env))
            _, second = stack.enter_context(running_server(tmp_path, WORKERS="1", **env))
            login = httpx.post(
                f"{first}/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            yield Hosts(first, second, auth, database_url)
    finally:
        drop_database(pg_admin, name)


def stored_answers(database_url: str) -> list[tuple[int, str, str, Any]]:
    """``(id, status, content, owner)`` of every stored answer, oldest first."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, status, content, owner FROM messages WHERE role = 'assistant' ORDER BY id"
        ).fetchall()
    return [tuple(row) for row in rows]


async def wait_for_answer(database_url: str, status: str = "complete") -> tuple[int, str, str, Any]:
    """The newest answer (this test's: the module's tests run one at a time) once
    it has ``status``: the server finishes it on its own."""
    async with asyncio.timeout(30):
        while True:
            answers = await asyncio.to_thread(stored_answers, database_url)
            if answers and answers[-1][1] == status:
                return answers[-1]
            await asyncio.sleep(0.05)


class Events:
    """The events of one SSE response, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.seen: list[tuple[str, Any, str | None]] = []

    async def next(self) -> tuple[str, Any, str | None]:
        name, event_id = "", None
        async for line in self._lines:
            if line.startswith("id: "):
                event_id = line.removeprefix("id: ")
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = (name, json.loads(line.removeprefix("data: ")), event_id)
                self.seen.append(event)
                return event
        raise AssertionError(f"the stream ended after {[n for n, _, _ in self.seen]}")

    async def until_end(self) -> list[tuple[str, Any, str | None]]:
        while not self.seen or self.seen[-1][0] not in ("done", "stopped", "error"):
            await self.next()
        return self.seen

    @property
    def text(self) -> str:
        return "".join(data["text"] for name, data, _ in self.seen if name == "delta")

    async def aclose(self) -> None:
        await self._lines.aclose()  # type: ignore[attr-defined]


def gated(count: int = len(PIECES)) -> tuple[Reply, list[threading.Event]]:
    gates = [threading.Event() for _ in range(count)]
    return Reply(pieces=PIECES[:count], piece_gates=dict(enumerate(gates))), gates


STREAM = {"Accept": "text/event-stream"}


async def new_chat(client: httpx.AsyncClient) -> int:
    chat: dict[str, Any] = (await client.post("/chats", json={"title": "t"})).json()
    return int(chat["id"])


# --- a client that leaves -------------------------------------------------------------


@pytest.mark.parametrize("leaves_after", ["user_message", "delta"])
async def test_a_client_that_leaves_does_not_stop_the_answer(
    hosts: Hosts, model: GeminiStandIn, leaves_after: str
) -> None:
    reply, gates = gated()
    model.plan(reply)
    left_before = model.left_early
    async with httpx.AsyncClient(base_url=hosts.first, headers=hosts.auth, timeout=30) as client:
        chat_id = await new_chat(client)
        if leaves_after == "delta":
            gates[0].set()
        async with client.stream(
            "POST", f"/chats/{chat_id}/messages", json={"content": "A story"}, headers=STREAM
        ) as response:
            events = Events(response)
            while (await events.next())[0] != leaves_after:
                pass
            await events.aclose()
    for gate in gates:  # the model goes on once nobody is listening
        gate.set()
    answer_id, status, content, owner = await wait_for_answer(hosts.database_url)
    assert (status, content, owner) == ("complete", WHOLE, None)
    assert model.left_early == left_before, "the model call was never abandoned"
    assert answer_id > 0


# --- resume -------------------------------------------------------------------------------


async def test_a_resume_on_another_host_misses_and_repeats_nothing(
    hosts: Hosts, model: GeminiStandIn
) -> None:
    reply, gates = gated()
    model.plan(reply)
    async with (
        httpx.AsyncClient(base_url=hosts.first, headers=hosts.auth, timeout=30) as first,
        httpx.AsyncClient(base_url=hosts.second, headers=hosts.auth, timeout=30) as second,
    ):
        chat_id = await new_chat(first)
        for gate in gates[:3]:
            gate.set()
        async with first.stream(
            "POST", f"/chats/{chat_id}/messages", json={"content": "A story"}, headers=STREAM
        ) as response:
            events = Events(response)
            assert (await events.next())[0] == "user_message"
            name, answer, _ = await events.next()
            assert (name, answer["status"], answer["content"]) == (
                "assistant_message",
                "streaming",
                "",
            )
            received = ""
            last_id = ""
            while len(received) < len("".join(PIECES[:3])):
                name, data, last_id = await events.next()  # type: ignore[assignment]
                assert name == "delta"
                received += data["text"]
            await events.aclose()
        assert last_id == f"{answer['id']}:{len(received)}"
        # The phone reconnects, to the other host, from the middle of the third piece.
        resume_at = len(received) - 2
        async with second.stream(
            "GET",
            f"/chats/{chat_id}/messages/{answer['id']}/stream",
            headers={**STREAM, "Last-Event-ID": f"{answer['id']}:{resume_at}"},
        ) as response:
            assert response.status_code == 200
            resumed = Events(response)
            name, data, event_id = await resumed.next()
            assert (name, data["text"]) == ("delta", received[resume_at:])
            assert event_id == f"{answer['id']}:{len(received)}"
            for gate in gates[3:]:
                gate.set()
            seen = await resumed.until_end()
        assert seen[-1][0] == "done"
        assert received[:resume_at] + resumed.text == WHOLE == seen[-1][1]["content"]
        offsets = [int(i.split(":")[1]) for n, _, i in seen if n == "delta" and i]
        assert offsets == sorted(offsets)
        assert offsets[-1] == len(WHOLE)
        # After the end, a resume anywhere sends the rest and the end at once.
        for client in (first, second):
            finished = await client.get(
                f"/chats/{chat_id}/messages/{answer['id']}/stream?offset=10", headers=STREAM
            )
            names = [line for line in finished.text.splitlines() if line.startswith("event: ")]
            assert names == ["event: delta", "event: done"]
            assert (
                f"data: {json.dumps({'text': WHOLE[10:]}, separators=(',', ':'))}" in finished.text
            )
            as_json = await client.get(f"/chats/{chat_id}/messages/{answer['id']}/stream")
            assert (as_json.json()["status"], as_json.json()["content"]) == ("complete", WHOLE)


async def test_a_resume_refuses_what_is_not_the_callers_answer(
    hosts: Hosts, model: GeminiStandIn
) -> None:
    async with httpx.AsyncClient(base_url=hosts.second, headers=hosts.auth, timeout=30) as client:
        chat_id = await new_chat(client)
        sent = (await client.post(f"/chats/{chat_id}/messages", json={"content": "Hi"})).json()
        answer_id, question_id = sent["assistant_message"]["id"], sent["user_message"]["id"]
        for path in (
            f"/chats/{chat_id}/messages/{question_id}/stream",
            f"/chats/{chat_id + 1}/messages/{answer_id}/stream",
            f"/chats/{chat_id}/messages/{answer_id + 100}/stream",
        ):
            assert (await client.get(path, headers=STREAM)).status_code == 404
        bad = await client.get(
            f"/chats/{chat_id}/messages/{answer_id}/stream",
            headers={**STREAM, "Last-Event-ID": f"{question_id}:3"},
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")


# --- stop -----------------------------------------------------------------------------------


async def test_a_stop_from_another_host_reaches_every_reader(
    hosts: Hosts, model: GeminiStandIn
) -> None:
    reply, gates = gated()
    model.plan(reply)
    gates[0].set()
    gates[1].set()
    async with (
        httpx.AsyncClient(base_url=hosts.first, headers=hosts.auth, timeout=30) as first,
        httpx.AsyncClient(base_url=hosts.second, headers=hosts.auth, timeout=30) as second,
        httpx.AsyncClient(base_url=hosts.first, headers=hosts.auth, timeout=30) as third,
    ):
        chat_id = await new_chat(first)
        async with first.stream(
            "POST", f"/chats/{chat_id}/messages", json={"content": "A story"}, headers=STREAM
        ) as response:
            writer = Events(response)
            await writer.next()
            _, answer, _ = await writer.next()
            while writer.text != "".join(PIECES[:2]):
                await writer.next()
            async with second.stream(
                "GET", f"/chats/{chat_id}/messages/{answer['id']}/stream", headers=STREAM
            ) as other_response:
                follower = Events(other_response)
                while follower.text != "".join(PIECES[:2]):
                    await follower.next()
                # Stopped on a third connection, by whichever worker of the first host.
                stop = await third.post(f"/chats/{chat_id}/stop")
                assert stop.status_code == 200, stop.text
                assert stop.json() == {"stopped": [answer["id"]]}
                for events in (writer, follower):
                    seen = await events.until_end()
                    assert seen[-1][0] == "stopped"
                    assert seen[-1][1]["status"] == "stopped"
                    assert seen[-1][1]["content"] == events.text == "".join(PIECES[:2])
        assert (await third.post(f"/chats/{chat_id}/stop")).json() == {"stopped": []}
        shown = (await second.get(f"/chats/{chat_id}")).json()["messages"][-1]
        assert (shown["status"], shown["content"]) == ("stopped", "".join(PIECES[:2]))
        # The chat takes a new question at once.
        model.plan(Reply(pieces=("Fine",)))
        again = await second.post(f"/chats/{chat_id}/messages", json={"content": "Go on"})
        assert again.status_code == 201, again.text
        assert again.json()["assistant_message"]["content"] == "Fine"
        assert (await first.post("/chats/999999/stop")).status_code == 404


# --- a process that dies -------------------------------------------------------------------


async def test_answers_of_a_killed_server_are_failed_at_the_next_start(
    tmp_path: Path, database_url: str, model: GeminiStandIn
) -> None:
    add_ann(database_url)
    reply, gates = gated()
    model.plan(reply)
    gates[0].set()
    env = env_for(tmp_path, database_url, model.url, REDIS_URL="")
    with running_server(tmp_path, **env) as (process, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            login = await client.post(
                "/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            )
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            chat_id = await new_chat(client)
            async with client.stream(
                "POST", f"/chats/{chat_id}/messages", json={"content": "A story"}, headers=STREAM
            ) as response:
                events = Events(response)
                while not events.text:
                    await events.next()
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    answer_id, status, _, owner = stored_answers(database_url)[-1]
    assert (status, owner is not None) == ("streaming", True), "left as it was"
    with running_server(tmp_path, **env):
        answer = stored_answers(database_url)[-1]
    assert answer[0] == answer_id
    assert (answer[1], answer[3]) == ("failed", None)
