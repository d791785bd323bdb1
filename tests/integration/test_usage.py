"""Usage and daily quotas end to end, on real ``gemini-backend serve`` processes
over PostgreSQL with model stand-ins (docs/conversations.md, "Usage and
quotas").

Two deployments, started once for the module, each on a database of its own:

- ``shared``: two workers behind one port, a daily message quota of 3, Gemini
  (a stand-in) as the default model and an OpenAI-compatible stand-in beside
  it, and an admin. Its tests each work with users of their own.
- ``token_limited``: one worker and a daily token quota of 20.

Every answer is checked where it lands: the stored message, ``GET /usage``,
``GET /admin/usage``, the ``usage_days`` rollup and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import argon2
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .api import PASSWORD, parse_events
from .gemini_standin import GeminiStandIn
from .openai_standin import OpenAiStandIn
from .pgutil import create_database, drop_database, unique_dbname, url_with_dbname
from .server import running_server
from .standin import Reply

pytestmark = pytest.mark.postgres

GEMINI_MODEL = "gemini-test"
OPENAI_MODEL = "local-model"
ADMIN = {"email": "root@example.com", "password": "a long admin passphrase"}
MESSAGE_QUOTA = 3
TOKEN_QUOTA = 20
DEADLINE_SECONDS = 30.0


# --- deployments -------------------------------------------------------------------------


@dataclass
class Deployment:
    base: str
    database_url: str


def env_for(
    tmp_path: Path, database_url: str, gemini: GeminiStandIn, **extra: str
) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "DATABASE_URL": database_url,
        "GOOGLE_API_KEY": "test-key",
        "GEMINI_BASE_URL": gemini.url,
        "GEMINI_MODEL": GEMINI_MODEL,
        "LLM_TIMEOUT_SECONDS": "60",
        "RATE_LIMIT_ENABLED": "false",  # the quotas hold regardless (the spec says so)
        "MAX_RUNNING_ANSWERS_PER_USER": "20",  # so that parallel sends meet only the quota
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture(scope="module")
def gemini() -> Iterator[GeminiStandIn]:
    with GeminiStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def openai() -> Iterator[OpenAiStandIn]:
    with OpenAiStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def deployments(
    tmp_path_factory: pytest.TempPathFactory,
    pg_server_url: str,
    pg_admin: psycopg.Connection[Any],
    template_database: str,
    gemini: GeminiStandIn,
    openai: OpenAiStandIn,
) -> Iterator[tuple[Deployment, Deployment]]:
    """Both deployments, started once for the module's tests."""
    names = [unique_dbname("gemini_usage"), unique_dbname("gemini_tokens")]
    urls = [url_with_dbname(pg_server_url, name) for name in names]
    with ExitStack() as stack:
        for name in names:
            create_database(pg_admin, name, template=template_database)
            stack.callback(drop_database, pg_admin, name)
        shared_env = env_for(
            tmp_path_factory.mktemp("shared"),
            urls[0],
            gemini,
            WORKERS="2",
            # Signals on Redis when there is one (as a deployment of several
            # workers would run), else on PostgreSQL.
            REDIS_URL=os.environ.get("REDIS_URL", ""),
            DAILY_MESSAGE_QUOTA=str(MESSAGE_QUOTA),
            OPENAI_BASE_URL=openai.url,
            LLM_MODELS=f"openai:{OPENAI_MODEL}",
        )
        token_env = env_for(
            tmp_path_factory.mktemp("tokens"),
            urls[1],
            gemini,
            WORKERS="1",
            REDIS_URL="",
            DAILY_TOKEN_QUOTA=str(TOKEN_QUOTA),
        )
        tmp = tmp_path_factory.mktemp("cwd")
        _, shared = stack.enter_context(running_server(tmp, **shared_env))
        _, tokens = stack.enter_context(running_server(tmp, **token_env))
        yield Deployment(shared, urls[0]), Deployment(tokens, urls[1])


@pytest.fixture
def shared(deployments: tuple[Deployment, Deployment]) -> Deployment:
    return deployments[0]


@pytest.fixture
def token_limited(deployments: tuple[Deployment, Deployment]) -> Deployment:
    return deployments[1]


# --- helpers -----------------------------------------------------------------------------


_HASH = argon2.PasswordHasher().hash(PASSWORD)  # any Argon2 hash verifies


def add_user(database_url: str, name: str) -> int:
    """A verified user, stored directly; their id."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO users (email, username, password_hash, is_verified)"
            " VALUES (%s, %s, %s, true) RETURNING id",
            (f"{name}@example.com", name, _HASH),
        ).fetchone()
    assert row is not None
    return int(row[0])


@asynccontextmanager
async def signed_in(
    base: str, email: str, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_SECONDS) as client:
        login = await client.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        yield client


async def new_chat(client: httpx.AsyncClient, model: str | None = None) -> int:
    # Titled: no title call reaches a model, so every model call is an answer.
    body: dict[str, Any] = {"title": "usage"}
    if model is not None:
        body["model"] = model
    response = await client.post("/chats", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def send(client: httpx.AsyncClient, chat_id: int, content: str = "Hi") -> httpx.Response:
    return await client.post(f"/chats/{chat_id}/messages", json={"content": content})


def next_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)


def assert_quota_exceeded(
    response: httpx.Response, *, quota: int, used: int, asked_at: datetime
) -> dict[str, Any]:
    """A 429 ``quota-exceeded`` problem for a request made at ``asked_at`` (or a
    moment after): ``Retry-After`` and ``resets_at`` name the next UTC midnight."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == "quota-exceeded"
    assert body["status"] == 429
    assert (body["quota"], body["used"]) == (quota, used)
    answered_at = datetime.now(UTC)
    # The day may turn between the request and now; either midnight is right then.
    midnights = {next_midnight(asked_at), next_midnight(answered_at)}
    resets_at = datetime.fromisoformat(body["resets_at"])
    assert resets_at in midnights, body["resets_at"]
    retry_after = int(response.headers["retry-after"])
    earliest = (resets_at - answered_at).total_seconds()
    latest = (resets_at - asked_at).total_seconds()
    assert math.floor(earliest) - 2 <= retry_after <= math.ceil(latest) + 2, (
        retry_after,
        earliest,
        latest,
    )
    return body


def today_of(usage: dict[str, Any]) -> dict[str, Any]:
    """Today's entry of a ``GET /usage`` body (its last day by default)."""
    today = datetime.now(UTC).date().isoformat()
    day: dict[str, Any] = usage["days"][-1]
    assert day["date"] == today
    return day


async def usage_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/usage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


async def metric(base: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels (0 when there are none)."""
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_SECONDS) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def metric_reaches(base: str, name: str, expected: float, **labels: str) -> None:
    """Wait until the metric is ``expected``, then check it stays there (read once
    more); fail with its last value at the deadline."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while (value := await metric(base, name, **labels)) != expected:
        assert value < expected, f"{name}{labels} is {value}, more than {expected}"
        assert asyncio.get_running_loop().time() < deadline, f"{name}{labels} stayed at {value}"
        await asyncio.sleep(0.05)
    assert await metric(base, name, **labels) == expected


TOKENS = "gemini_model_tokens_total"
REFUSALS = "gemini_quota_refusals_total"


# --- the message quota across workers ------------------------------------------------------


async def test_parallel_sends_on_two_workers_cannot_pass_the_message_quota(
    shared: Deployment, gemini: GeminiStandIn
) -> None:
    """Ten sends at once, on ten connections to two workers: three answers, whose
    model calls are held until every other send has been refused, so the three
    are running while the other seven ask."""
    user_id = add_user(shared.database_url, "para")
    refusals_before = await metric(shared.base, REFUSALS, unit="messages")
    calls_before = len(gemini.requests)
    gate = threading.Event()
    async with signed_in(shared.base, "para@example.com") as client:
        chats = [await new_chat(client) for _ in range(10)]
        gemini.plan(*(Reply(answer_gate=gate) for _ in range(MESSAGE_QUOTA)))
        asked_at = datetime.now(UTC)
        sends = [asyncio.ensure_future(send(client, chat_id)) for chat_id in chats]
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                pending = set(sends)
                while len(pending) > MESSAGE_QUOTA:  # the refusals come back at once
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                while True:  # and the answers are with the model
                    if len(gemini.requests) - calls_before >= MESSAGE_QUOTA:
                        break
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass  # let the answers go: the assertions below say what went wrong
        finally:
            gate.set()
        responses = await asyncio.gather(*sends)

        answered = [(c, r) for c, r in zip(chats, responses, strict=True) if r.status_code == 201]
        refused = [(c, r) for c, r in zip(chats, responses, strict=True) if r.status_code != 201]
        assert len(answered) == MESSAGE_QUOTA, [r.status_code for r in responses]
        assert len(refused) == 10 - MESSAGE_QUOTA
        assert len(gemini.requests) - calls_before == MESSAGE_QUOTA, "a refusal reached the model"
        for _, response in answered:
            answer = response.json()["assistant_message"]
            assert (answer["status"], answer["content"]) == ("complete", "Hello, world!")
            assert (answer["prompt_tokens"], answer["completion_tokens"]) == (11, 7)
        for _, response in refused:
            assert_quota_exceeded(
                response, quota=MESSAGE_QUOTA, used=MESSAGE_QUOTA, asked_at=asked_at
            )

        # Nothing of a refused send is stored, not even its question.
        for chat_id, _ in refused:
            shown = await client.get(f"/chats/{chat_id}")
            assert shown.status_code == 200
            assert shown.json()["messages"] == []
        for chat_id, _ in answered:
            shown = (await client.get(f"/chats/{chat_id}")).json()["messages"]
            assert [(m["role"], m["status"]) for m in shown] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]
        stored = query(
            shared.database_url,
            "SELECT chat_id, role FROM messages WHERE user_id = %s ORDER BY id",
            user_id,
        )
        assert sorted(stored) == sorted(
            (chat_id, role) for chat_id, _ in answered for role in ("user", "assistant")
        )
        assert query(
            shared.database_url,
            "SELECT messages, prompt_tokens, completion_tokens FROM usage_days WHERE user_id = %s",
            user_id,
        ) == [(3, 33, 21)]

        usage = await usage_of(client)
        assert usage["quota"]["daily_messages"] == MESSAGE_QUOTA
        assert usage["quota"]["daily_tokens"] is None
        assert usage["quota"]["used_messages_today"] == 3
        assert usage["quota"]["used_tokens_today"] == 3 * 18
        assert usage["totals"] == {"messages": 3, "prompt_tokens": 33, "completion_tokens": 21}
        assert len(usage["days"]) == 30
        assert today_of(usage)["messages"] == 3
        assert sum(day["messages"] for day in usage["days"]) == 3

        # Still refused afterwards, with no answer running; streamed too, before any event.
        late = await send(client, refused[0][0])
        assert_quota_exceeded(late, quota=3, used=3, asked_at=asked_at)
        streamed = await client.post(
            f"/chats/{refused[1][0]}/messages",
            json={"content": "Hi"},
            headers={"Accept": "text/event-stream"},
        )
        assert_quota_exceeded(streamed, quota=3, used=3, asked_at=asked_at)
        for chat_id, _ in refused[:2]:
            assert (await client.get(f"/chats/{chat_id}")).json()["messages"] == []
        assert len(gemini.requests) - calls_before == MESSAGE_QUOTA
        await metric_reaches(
            shared.base, REFUSALS, refusals_before + len(refused) + 2, unit="messages"
        )


# --- tokens from each provider ---------------------------------------------------------------


async def test_token_counts_of_each_provider_reach_messages_usage_and_metrics(
    shared: Deployment, gemini: GeminiStandIn, openai: OpenAiStandIn
) -> None:
    add_user(shared.database_url, "toki")
    labels = {
        (provider, model, kind): await metric(
            shared.base, TOKENS, provider=provider, model=model, kind=kind
        )
        for provider, model in (("gemini", GEMINI_MODEL), ("openai", OPENAI_MODEL))
        for kind in ("prompt", "completion")
    }
    gemini_calls, openai_calls = len(gemini.requests), len(openai.requests)
    gemini.plan(Reply(pieces=("From", " Gemini"), usage=(13, 5)))
    openai.plan(Reply(pieces=("From", " local"), usage=(17, 9)))
    async with signed_in(shared.base, "toki@example.com") as client:
        on_gemini = await new_chat(client)
        on_openai = await new_chat(client, OPENAI_MODEL)
        first = await send(client, on_gemini)
        assert first.status_code == 201, first.text
        answer = first.json()["assistant_message"]
        assert (answer["model"], answer["content"]) == (GEMINI_MODEL, "From Gemini")
        assert (answer["prompt_tokens"], answer["completion_tokens"]) == (13, 5)
        # Streamed, this one: the end event carries the counts too.
        streamed = await client.post(
            f"/chats/{on_openai}/messages",
            json={"content": "Hi"},
            headers={"Accept": "text/event-stream"},
        )
        assert streamed.status_code == 200, streamed.text
        name, done = parse_events(streamed.text)[-1]
        assert (name, done["model"], done["content"]) == ("done", OPENAI_MODEL, "From local")
        assert (done["prompt_tokens"], done["completion_tokens"]) == (17, 9)
        assert len(gemini.requests) - gemini_calls == 1
        assert len(openai.requests) - openai_calls == 1

        for chat_id, model, tokens in (
            (on_gemini, GEMINI_MODEL, (13, 5)),
            (on_openai, OPENAI_MODEL, (17, 9)),
        ):
            shown = (await client.get(f"/chats/{chat_id}")).json()["messages"]
            assert [m["role"] for m in shown] == ["user", "assistant"]
            stored = shown[-1]
            assert (stored["model"], stored["status"]) == (model, "complete")
            assert (stored["prompt_tokens"], stored["completion_tokens"]) == tokens

        usage = await usage_of(client)
        today = today_of(usage)
        assert (today["messages"], today["prompt_tokens"], today["completion_tokens"]) == (
            2,
            30,
            14,
        )
        assert usage["totals"] == {"messages": 2, "prompt_tokens": 30, "completion_tokens": 14}
        assert usage["quota"]["used_tokens_today"] == 44
        assert usage["quota"]["used_messages_today"] == 2

    expected = {
        ("gemini", GEMINI_MODEL, "prompt"): 13,
        ("gemini", GEMINI_MODEL, "completion"): 5,
        ("openai", OPENAI_MODEL, "prompt"): 17,
        ("openai", OPENAI_MODEL, "completion"): 9,
    }
    for (provider, model, kind), added in expected.items():
        await metric_reaches(
            shared.base,
            TOKENS,
            labels[provider, model, kind] + added,
            provider=provider,
            model=model,
            kind=kind,
        )
    # No model is counted under another's provider.
    assert await metric(shared.base, TOKENS, provider="openai", model=GEMINI_MODEL) == 0
    assert await metric(shared.base, TOKENS, provider="gemini", model=OPENAI_MODEL) == 0


# --- a user's own quota, set by an admin ----------------------------------------------------------


async def test_an_admin_sets_a_users_own_quota_and_reads_everyones_usage(
    shared: Deployment,
) -> None:
    cat_id = add_user(shared.database_url, "cat")
    add_user(shared.database_url, "dan")
    refusals_before = await metric(shared.base, REFUSALS, unit="messages")
    async with (
        signed_in(shared.base, ADMIN["email"], ADMIN["password"]) as admin,
        signed_in(shared.base, "cat@example.com") as cat,
        signed_in(shared.base, "dan@example.com") as dan,
    ):
        edited = await admin.put(
            f"/admin/users/{cat_id}",
            json={"daily_message_quota": 1, "daily_token_quota": 100000},
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["id"] == cat_id
        assert (edited.json()["daily_message_quota"], edited.json()["daily_token_quota"]) == (
            1,
            100000,
        )
        quota = (await usage_of(cat))["quota"]
        assert (quota["daily_messages"], quota["daily_tokens"]) == (1, 100000)

        first_chat, second_chat = await new_chat(cat), await new_chat(cat)
        first = await send(cat, first_chat)
        assert first.status_code == 201, first.text
        asked_at = datetime.now(UTC)
        assert_quota_exceeded(await send(cat, second_chat), quota=1, used=1, asked_at=asked_at)
        # A regenerate is an answer too.
        answer_id = first.json()["assistant_message"]["id"]
        again = await cat.post(f"/chats/{first_chat}/messages/{answer_id}/regenerate", json={})
        assert_quota_exceeded(again, quota=1, used=1, asked_at=asked_at)
        assert (await cat.get(f"/chats/{second_chat}")).json()["messages"] == []
        assert len((await cat.get(f"/chats/{first_chat}")).json()["messages"]) == 2
        await metric_reaches(shared.base, REFUSALS, refusals_before + 2, unit="messages")

        # Null: back to the deployment's default; the other limit stays as set.
        reset = await admin.put(f"/admin/users/{cat_id}", json={"daily_message_quota": None})
        assert reset.status_code == 200, reset.text
        assert (reset.json()["daily_message_quota"], reset.json()["daily_token_quota"]) == (
            None,
            100000,
        )
        quota = (await usage_of(cat))["quota"]
        assert (quota["daily_messages"], quota["used_messages_today"]) == (MESSAGE_QUOTA, 1)
        reset = await admin.put(f"/admin/users/{cat_id}", json={"daily_token_quota": None})
        assert (reset.json()["daily_message_quota"], reset.json()["daily_token_quota"]) == (
            None,
            None,
        )
        listed = (await admin.get("/admin/users", params={"q": "cat"})).json()["items"]
        assert [(u["id"], u["daily_message_quota"]) for u in listed] == [(cat_id, None)]

        second = await send(cat, second_chat)
        assert second.status_code == 201, second.text
        assert (await send(dan, await new_chat(dan))).status_code == 201

        # Every user's usage, biggest first.
        assert (await cat.get("/admin/usage")).status_code == 403
        report = await admin.get("/admin/usage")
        assert report.status_code == 200, report.text
        page = report.json()
        items = page["items"]
        assert (page["page"], page["size"]) == (1, 20)
        assert page["total"] == len(items) >= 2  # every user of this module's tests
        assert page["pages"] == 1
        by_email = {item["user"]["email"]: item for item in items}
        assert {k: by_email["cat@example.com"][k] for k in ("messages", "prompt_tokens")} == {
            "messages": 2,
            "prompt_tokens": 22,
        }
        assert by_email["cat@example.com"]["completion_tokens"] == 14
        assert by_email["cat@example.com"]["user"]["id"] == cat_id
        assert by_email["cat@example.com"]["user"]["username"] == "cat"
        assert "password_hash" not in by_email["cat@example.com"]["user"]
        assert (
            by_email["dan@example.com"]["messages"],
            by_email["dan@example.com"]["prompt_tokens"],
            by_email["dan@example.com"]["completion_tokens"],
        ) == (1, 11, 7)
        emails = [item["user"]["email"] for item in items]
        assert emails.index("cat@example.com") < emails.index("dan@example.com")
        assert ADMIN["email"] not in emails  # no answers, no row
        ranks = [
            (-(item["prompt_tokens"] + item["completion_tokens"]), -item["messages"])
            for item in items
        ]
        assert ranks == sorted(ranks)

        # A page at a time.
        second_page = (await admin.get("/admin/usage", params={"size": 1, "page": 2})).json()
        assert (second_page["page"], second_page["size"]) == (2, 1)
        assert (second_page["total"], second_page["pages"]) == (page["total"], page["total"])
        assert second_page["items"] == items[1:2]
        beyond = (await admin.get("/admin/usage", params={"page": 99})).json()
        assert (beyond["items"], beyond["total"]) == ([], page["total"])
        tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
        later = (await admin.get("/admin/usage", params={"from": tomorrow})).json()
        assert (later["items"], later["total"], later["pages"]) == ([], 0, 0)


# --- the token quota ------------------------------------------------------------------------------


async def test_the_token_quota_refuses_once_the_days_tokens_reach_it(
    token_limited: Deployment,
) -> None:
    """Each answer costs the stand-in's default 11 + 7 = 18 tokens: the second
    starts at 18 of 20 and passes, the third starts at 36 and is refused."""
    add_user(token_limited.database_url, "tim")
    refusals_before = await metric(token_limited.base, REFUSALS, unit="tokens")
    async with signed_in(token_limited.base, "tim@example.com") as tim:
        chats = [await new_chat(tim) for _ in range(3)]
        for chat_id in chats[:2]:
            sent = await send(tim, chat_id)
            assert sent.status_code == 201, sent.text
            answer = sent.json()["assistant_message"]
            assert (answer["prompt_tokens"], answer["completion_tokens"]) == (11, 7)
        asked_at = datetime.now(UTC)
        refused = await send(tim, chats[2])
        assert_quota_exceeded(refused, quota=TOKEN_QUOTA, used=36, asked_at=asked_at)
        assert (await tim.get(f"/chats/{chats[2]}")).json()["messages"] == []
        quota = (await usage_of(tim))["quota"]
        assert quota == {
            "daily_tokens": TOKEN_QUOTA,
            "daily_messages": None,
            "used_tokens_today": 36,
            "used_messages_today": 2,
            "resets_at": quota["resets_at"],
        }
        assert datetime.fromisoformat(quota["resets_at"]) in {
            next_midnight(asked_at),
            next_midnight(datetime.now(UTC)),
        }
    await metric_reaches(token_limited.base, REFUSALS, refusals_before + 1, unit="tokens")
    assert await metric(token_limited.base, REFUSALS, unit="messages") == 0

    # Admins have no limit unless one is set on them.
    async with signed_in(token_limited.base, ADMIN["email"], ADMIN["password"]) as admin:
        for _ in range(3):
            sent = await send(admin, await new_chat(admin))
            assert sent.status_code == 201, sent.text
        quota = (await usage_of(admin))["quota"]
        assert (quota["daily_tokens"], quota["used_tokens_today"]) == (None, 54)
