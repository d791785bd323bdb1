"""``/chats`` and ``/search`` over HTTP, on PostgreSQL, with the real Gemini
adapter (google-genai) talking to a local stand-in of the Gemini API.

Most tests use Litestar's test client; the ones about streaming and
disconnects run the real server process (granian), where "each piece leaves
as it arrives" and "the client went away" mean what they say.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.bootstrap import Repositories
from adapters.passwords import Argon2PasswordHasher
from adapters.postgres.pool import Database
from adapters.postgres.users import PostgresUserRepository
from gemini_core.entities import NewUser
from tests.images import png
from web.app import create_app
from web.settings import load_settings

from .api import PASSWORD, assert_problem, parse_events
from .gemini_standin import GeminiStandIn, Reply
from .server import running_server

MODEL = "gemini-test"


def chat_env(tmp_path: Path, database_url: str, model_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "DATABASE_URL": database_url,
        "GOOGLE_API_KEY": "test-key",
        "GEMINI_BASE_URL": model_url,
        "GEMINI_MODEL": MODEL,
        "LLM_MODELS": f"{MODEL},gemini-other",
        "LLM_TIMEOUT_SECONDS": "2",
        "LLM_MAX_HISTORY_MESSAGES": "6",
        "RATE_LIMIT_ENABLED": "false",
        **extra,
    }


async def add_user(users: PostgresUserRepository, name: str) -> None:
    await users.add(
        NewUser(
            email=f"{name}@example.com",
            username=name,
            password_hash=await Argon2PasswordHasher().hash(PASSWORD),
            is_verified=True,
        )
    )


@pytest.fixture
def model() -> Iterator[GeminiStandIn]:
    standin = GeminiStandIn()
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@dataclass
class Api:
    client: AsyncTestClient[Litestar]
    app: Litestar
    model: GeminiStandIn
    repos: Repositories

    async def sign_in(self, name: str) -> dict[str, str]:
        await add_user(self.repos.users, name)
        response = await self.client.post(
            "/auth/login", json={"email": f"{name}@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def new_chat(self, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
        # Titled unless asked otherwise: a title call would take a planned reply.
        fields.setdefault("title", "A chat")
        response = await self.client.post("/chats", json=fields, headers=auth)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def send(
        self, auth: dict[str, str], chat_id: int, content: str = "Hi", **fields: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/chats/{chat_id}/messages", json={"content": content, **fields}, headers=auth
        )

    async def stream(
        self, auth: dict[str, str], chat_id: int, content: str = "Hi"
    ) -> tuple[httpx.Response, list[tuple[str, Any]]]:
        response = await self.client.post(
            f"/chats/{chat_id}/messages",
            json={"content": content},
            headers={**auth, "Accept": "text/event-stream"},
        )
        return response, parse_events(response.text)

    async def messages(self, auth: dict[str, str], chat_id: int) -> list[dict[str, Any]]:
        response = await self.client.get(f"/chats/{chat_id}", headers=auth)
        assert response.status_code == 200, response.text
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages


@pytest.fixture
async def api(
    tmp_path: Path, database_url: str, database: Database, model: GeminiStandIn
) -> AsyncIterator[Api]:
    settings = load_settings(environ=chat_env(tmp_path, database_url, model.url), env_file=None)
    app = create_app(settings=settings)
    async with AsyncTestClient(app, timeout=30) as client:
        yield Api(client, app, model, Repositories.on_postgres(database))


# --- chats ------------------------------------------------------------------------------


async def test_chats_are_created_listed_changed_and_deleted(api: Api) -> None:
    ann = await api.sign_in("ann")
    created = await api.new_chat(ann, title="Plans", system_prompt="Be brief.")
    assert set(created) == {
        "id",
        "title",
        "model",
        "system_prompt",
        "pinned",
        "archived",
        "created_at",
        "updated_at",
        "message_count",
        "current_message_id",
    }
    assert (created["title"], created["model"], created["system_prompt"]) == (
        "Plans",
        MODEL,
        "Be brief.",
    )
    assert created["created_at"].endswith("Z")
    other = await api.new_chat(ann, model="gemini-other", title=None)
    assert (other["model"], other["title"]) == ("gemini-other", None)

    listed = (await api.client.get("/chats", headers=ann)).json()
    assert [c["id"] for c in listed["items"]] == [other["id"], created["id"]]
    assert listed["next_cursor"] is None

    chat_id = created["id"]
    response = await api.client.patch(
        f"/chats/{chat_id}",
        json={"title": "Trip", "pinned": True, "system_prompt": None},
        headers=ann,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["title"], changed["pinned"], changed["system_prompt"]) == ("Trip", True, None)
    assert changed["updated_at"] > created["updated_at"]
    listed = (await api.client.get("/chats", headers=ann)).json()
    assert [c["id"] for c in listed["items"]] == [chat_id, other["id"]]

    await api.client.patch(f"/chats/{other['id']}", json={"archived": True}, headers=ann)
    active = (await api.client.get("/chats?archived=false", headers=ann)).json()
    archived = (await api.client.get("/chats?archived=true", headers=ann)).json()
    assert [c["id"] for c in active["items"]] == [chat_id]
    assert [c["id"] for c in archived["items"]] == [other["id"]]
    assert [c["id"] for c in (await api.client.get("/chats?q=tri", headers=ann)).json()["items"]]
    assert (await api.client.get("/chats?q=nothing", headers=ann)).json()["items"] == []

    got = (await api.client.get(f"/chats/{chat_id}", headers=ann)).json()
    assert got["messages"] == []
    assert got["title"] == "Trip"

    assert (await api.client.delete(f"/chats/{chat_id}", headers=ann)).status_code == 204
    assert_problem(await api.client.get(f"/chats/{chat_id}", headers=ann), 404)
    assert_problem(await api.client.delete(f"/chats/{chat_id}", headers=ann), 404)


async def test_chat_fields_are_checked(api: Api) -> None:
    ann = await api.sign_in("ann")
    unknown = assert_problem(
        await api.client.post("/chats", json={"model": "gpt"}, headers=ann), 422
    )
    assert unknown["errors"][0]["field"] == "model"
    long = assert_problem(
        await api.client.post("/chats", json={"title": "x" * 201}, headers=ann), 422
    )
    assert long["errors"][0]["field"] == "title"
    prompt = assert_problem(
        await api.client.post("/chats", json={"system_prompt": "x" * 8001}, headers=ann), 422
    )
    assert prompt["errors"][0]["field"] == "system_prompt"
    assert_problem(await api.client.post("/chats", json={"title": 5}, headers=ann), 422)
    chat = await api.new_chat(ann)
    assert_problem(
        await api.client.patch(f"/chats/{chat['id']}", json={"model": "gpt"}, headers=ann), 422
    )
    for query in ("limit=0", "limit=101", "limit=x", "cursor=bogus"):
        assert_problem(await api.client.get(f"/chats?{query}", headers=ann), 422)
    for content in ("", "   ", "x" * 32001):
        body = assert_problem(await api.send(ann, chat["id"], content), 422)
        assert body["errors"][0]["field"] == "content"
    too_many = assert_problem(await api.send(ann, chat["id"], "hi", file_ids=list(range(11))), 422)
    assert too_many["errors"][0]["field"] == "file_ids"
    assert await api.messages(ann, chat["id"]) == []
    assert_problem(await api.client.get("/chats"), 401)
    assert_problem(await api.client.post(f"/chats/{chat['id']}/messages", json={}), 401)


async def test_another_users_chat_is_404_on_every_route(api: Api) -> None:
    ann, bob = await api.sign_in("ann"), await api.sign_in("bob")
    chat = await api.new_chat(ann)
    assert (await api.send(ann, chat["id"], "secret plans")).status_code == 201
    path = f"/chats/{chat['id']}"
    client = api.client
    assert_problem(await client.get(path, headers=bob), 404)
    assert_problem(await client.patch(path, json={"title": "mine"}, headers=bob), 404)
    assert_problem(await client.delete(path, headers=bob), 404)
    assert_problem(await client.get(f"{path}/messages", headers=bob), 404)
    assert_problem(await api.send(bob, chat["id"], "hello"), 404)
    response = await client.post(
        f"{path}/messages",
        json={"content": "hello"},
        headers={**bob, "Accept": "text/event-stream"},
    )
    assert_problem(response, 404)
    assert (await client.get("/chats", headers=bob)).json()["items"] == []
    assert (await client.get("/search?q=secret", headers=bob)).json()["items"] == []
    still = (await client.get(path, headers=ann)).json()
    assert (still["title"], still["message_count"]) == ("A chat", 2)


# --- sending ------------------------------------------------------------------------------


async def test_a_message_is_answered_with_history_and_system_prompt(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann, system_prompt="Answer in French.")
    first = await api.send(ann, chat["id"], "Hello")
    assert first.status_code == 201, first.text
    api.model.plan(Reply(pieces=("Bien", " sûr"), usage=(40, 2)))
    second = await api.send(ann, chat["id"], "Again")
    assert second.status_code == 201, second.text
    body = second.json()
    assert set(body) == {"user_message", "assistant_message"}
    user, answer = body["user_message"], body["assistant_message"]
    assert (user["role"], user["content"], user["status"], user["model"]) == (
        "user",
        "Again",
        "complete",
        None,
    )
    assert (answer["role"], answer["content"], answer["status"], answer["model"]) == (
        "assistant",
        "Bien sûr",
        "complete",
        MODEL,
    )
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (40, 2)
    assert answer["chat_id"] == chat["id"]
    assert answer["file_ids"] == []

    request = api.model.requests[-1]
    assert request.path.endswith(f"/models/{MODEL}:streamGenerateContent?alt=sse")
    assert request.body["systemInstruction"]["parts"][0]["text"] == "Answer in French."
    assert [(c["role"], c["parts"][0]["text"]) for c in request.body["contents"]] == [
        ("user", "Hello"),
        ("model", "Hello, world!"),
        ("user", "Again"),
    ]
    stored = await api.messages(ann, chat["id"])
    assert [m["content"] for m in stored] == ["Hello", "Hello, world!", "Again", "Bien sûr"]
    assert stored[-1] == answer


async def test_the_answer_streams_as_events_in_order(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    api.model.plan(Reply(pieces=("One", " two", " three"), usage=(5, 3)))
    response, events = await api.stream(ann, chat["id"], "Count")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    names = [name for name, _ in events]
    # A reader that falls behind gets what it missed as one delta.
    assert names[:2] == ["user_message", "assistant_message"]
    assert set(names[2:-1]) == {"delta"}
    assert names[-1] == "done"
    assert events[0][1]["content"] == "Count"
    assert (events[1][1]["status"], events[1][1]["content"]) == ("streaming", "")
    assert "".join(data["text"] for name, data in events if name == "delta") == "One two three"
    done = events[-1][1]
    assert done["id"] == events[1][1]["id"]
    assert (done["content"], done["status"], done["completion_tokens"]) == (
        "One two three",
        "complete",
        3,
    )
    assert await api.messages(ann, chat["id"]) == [events[0][1], done]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=429), 429),
        (Reply(status=500), 502),
        (Reply(status=400), 502),
        (Reply(first_delay=4.0), 504),
    ],
)
async def test_a_model_failure_keeps_the_question_and_stores_a_failed_answer(
    api: Api, reply: Reply, status: int
) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    api.model.plan(reply)
    response = await api.send(ann, chat["id"], "Are you there?")
    body = assert_problem(response, status)
    assert "stand-in" not in body["detail"]
    if status == 429:
        assert response.headers["retry-after"] == "17"
    stored = await api.messages(ann, chat["id"])
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Are you there?", "complete"),
        ("assistant", "", "failed"),
    ]


async def test_a_stream_cut_mid_answer_ends_with_an_error_event(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    api.model.plan(Reply(pieces=("Half", " an", " answer"), cut_after=2))
    response, events = await api.stream(ann, chat["id"], "Go on")
    assert response.status_code == 200
    names = [name for name, _ in events]
    assert names[:2] == ["user_message", "assistant_message"]
    assert set(names[2:-1]) == {"delta"}
    assert names[-1] == "error"
    assert "".join(data["text"] for name, data in events if name == "delta") == "Half an"
    problem = events[-1][1]
    assert (problem["status"], problem["title"]) == (502, "Bad Gateway")
    failed = (await api.messages(ann, chat["id"]))[-1]
    assert (failed["status"], failed["content"]) == ("failed", "Half an")

    api.model.plan(Reply(status=429))
    _, events = await api.stream(ann, chat["id"], "Again")
    assert [name for name, _ in events] == ["user_message", "assistant_message", "error"]
    assert events[-1][1]["status"] == 429


async def test_attached_images_reach_the_model_and_only_the_callers(api: Api) -> None:
    ann, bob = await api.sign_in("ann"), await api.sign_in("bob")
    picture = png(3, 2)
    uploaded = await api.client.post(
        "/upload", files={"file": ("cat.png", picture, "image/png")}, headers=ann
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    chat = await api.new_chat(ann)
    sent = await api.send(ann, chat["id"], "What is this?", file_ids=[file_id])
    assert sent.status_code == 201, sent.text
    question = sent.json()["user_message"]
    assert question["file_ids"] == [file_id]
    # A link to each image that serves it without a token, as an <img src> asks.
    assert question["file_urls"] == [uploaded.json()["signed_url"]]
    shown = await api.client.get(question["file_urls"][0])
    assert (shown.status_code, shown.content) == (200, picture)
    listed = await api.messages(ann, chat["id"])
    assert [m["file_urls"] for m in listed] == [question["file_urls"], []]
    page = await api.client.get(f"/chats/{chat['id']}/messages", headers=ann)
    assert [m["file_urls"] for m in page.json()["items"]] == [question["file_urls"], []]
    parts = api.model.requests[-1].body["contents"][-1]["parts"]
    assert parts[0] == {"text": "What is this?"}
    inline = parts[1]["inlineData"]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
    assert base64.urlsafe_b64decode(inline["data"]) == picture

    theirs = await api.new_chat(bob)
    refused = await api.send(bob, theirs["id"], "Mine now?", file_ids=[file_id])
    assert_problem(refused, 404)
    assert await api.messages(bob, theirs["id"]) == []


async def test_messages_page_backwards_without_gaps_or_repeats(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    for n in range(7):
        assert (await api.send(ann, chat["id"], f"question {n}")).status_code == 201
    seen: list[int] = []
    before = ""
    pages = 0
    while True:
        response = await api.client.get(
            f"/chats/{chat['id']}/messages?limit=4{before}", headers=ann
        )
        assert response.status_code == 200, response.text
        page = response.json()
        ids = [m["id"] for m in page["items"]]
        assert ids == sorted(ids), "oldest first within a page"
        seen = ids + seen
        pages += 1
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == str(ids[0])
        before = f"&before={page['next_cursor']}"
    assert pages == 4
    assert len(seen) == len(set(seen)) == 14
    assert seen == [m["id"] for m in await api.messages(ann, chat["id"])]
    assert_problem(await api.client.get(f"/chats/{chat['id']}/messages?limit=0", headers=ann), 422)


async def test_chats_page_without_gaps_or_repeats(api: Api) -> None:
    ann = await api.sign_in("ann")
    made = [(await api.new_chat(ann, title=f"chat {n}"))["id"] for n in range(8)]
    await api.client.patch(f"/chats/{made[3]}", json={"pinned": True}, headers=ann)
    seen: list[int] = []
    cursor = ""
    while True:
        page = (await api.client.get(f"/chats?limit=3{cursor}", headers=ann)).json()
        seen += [c["id"] for c in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [made[3], *reversed([m for m in made if m != made[3]])]


async def test_twenty_messages_sent_at_once_are_all_stored_once(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    responses = await asyncio.gather(
        *(api.send(ann, chat["id"], f"message {n}") for n in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20
    stored = await api.messages(ann, chat["id"])
    assert len(stored) == 40
    questions = [m["content"] for m in stored if m["role"] == "user"]
    assert sorted(questions) == sorted(f"message {n}" for n in range(20))
    answers = {r.json()["assistant_message"]["id"] for r in responses}
    assert answers == {m["id"] for m in stored if m["role"] == "assistant"}
    assert (await api.client.get(f"/chats/{chat['id']}", headers=ann)).json()["message_count"] == 40


async def test_search_finds_the_callers_messages_best_first(api: Api) -> None:
    ann = await api.sign_in("ann")
    travel = await api.new_chat(ann, title="Travel")
    food = await api.new_chat(ann, title="Food")
    api.model.plan(Reply(pieces=("Noted",)), Reply(pieces=("Rome has great pasta, pasta!",)))
    await api.send(ann, travel["id"], "Planning a trip to Rome")
    await api.send(ann, food["id"], "Where to eat pasta")
    response = await api.client.get("/search?q=pasta", headers=ann)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["chat_title"], i["message"]["role"]) for i in items] == [
        ("Food", "assistant"),
        ("Food", "user"),
    ]
    first = items[0]
    assert set(first) == {"chat_id", "chat_title", "message", "snippet"}
    assert first["chat_id"] == food["id"]
    assert "**pasta**" in first["snippet"]
    rome = (await api.client.get("/search?q=rome&limit=1", headers=ann)).json()["items"]
    assert len(rome) == 1
    body = assert_problem(await api.client.get("/search?q=", headers=ann), 422)
    assert body["errors"][0]["field"] == "q"
    assert_problem(await api.client.get("/search", headers=ann), 422)


async def test_an_untitled_chat_gets_a_title_from_the_model(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann, title=None)
    api.model.plan(Reply(pieces=("Sure",)), Reply(pieces=('"Rome', ' trip."')))
    assert (await api.send(ann, chat["id"], "Plan my Rome trip")).status_code == 201
    # Titles are written after the answer, in the background.
    deadline = time.monotonic() + 5
    while (titled := (await api.client.get(f"/chats/{chat['id']}", headers=ann)).json())[
        "title"
    ] is None:
        assert time.monotonic() < deadline, "no title"
        await asyncio.sleep(0.02)
    assert titled["title"] == "Rome trip"
    title_request = api.model.requests[-1].body
    assert "Plan my Rome trip" in title_request["contents"][0]["parts"][0]["text"]


# --- the real server: streaming and disconnects ----------------------------------------------


@pytest.fixture
async def served(
    tmp_path: Path, database_url: str, model: GeminiStandIn
) -> AsyncIterator[tuple[str, dict[str, str], Database, int]]:
    db = Database(database_url, min_size=1, max_size=2)
    await db.open()
    try:
        await add_user(PostgresUserRepository(db), "ann")
        # No deadline of the server's own ends a model call during a test:
        # only the client leaving, or the stand-in, can.
        env = chat_env(tmp_path, database_url, model.url, LLM_TIMEOUT_SECONDS="3600")
        with running_server(tmp_path, **env) as (process, base):
            async with httpx.AsyncClient(base_url=base) as client:
                login = await client.post(
                    "/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
                )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            yield base, auth, db, login.json()["user"]["id"]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    finally:
        await db.close()


async def test_each_piece_leaves_the_server_as_it_arrives(
    served: tuple[str, dict[str, str], Database, int], model: GeminiStandIn
) -> None:
    base, auth, _, _ = served
    # The model sends each piece only once the client has had the event
    # before it: the user's message before the model answers at all, then
    # each piece before the next. A server holding an event back would wait
    # for the model while the model waits for the client, until the client's
    # read timeout ends the test.
    gates = [threading.Event() for _ in range(3)]
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
        chat = (await client.post("/chats", json={"title": "t"})).json()
        model.plan(Reply(pieces=("first", " second", " third"), piece_gates=dict(enumerate(gates))))
        names: list[str] = []
        async with client.stream(
            "POST",
            f"/chats/{chat['id']}/messages",
            json={"content": "Slowly"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
                    # The pieces wait for the user's message, then for each other
                    # (not for the answer's own first event, sent with no model).
                    told = len([n for n in names if n != "assistant_message"])
                    if names[-1] != "assistant_message" and told <= len(gates):
                        gates[told - 1].set()
    assert names == ["user_message", "assistant_message", "delta", "delta", "delta", "done"]


# --- branches ---------------------------------------------------------------------------


def sent_texts(model: GeminiStandIn) -> list[str]:
    """The texts of the turns the model was last sent."""
    body = model.bodies()[-1]
    return [part["text"] for turn in body["contents"] for part in turn["parts"] if "text" in part]


async def test_editing_a_question_branches_and_the_old_answers_stay_reachable(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    api.model.plan(*(Reply(pieces=(f"answer {n}",)) for n in (1, 2, 3, 4)))
    turns = []
    for question in ("one", "two", "three"):
        response = await api.send(ann, chat["id"], question)
        assert response.status_code == 201, response.text
        turns.append(response.json())
    first_answer = turns[0]["assistant_message"]
    old_question = turns[1]["user_message"]
    assert old_question["parent_id"] == first_answer["id"]

    edited = await api.send(ann, chat["id"], "two, better", parent_id=first_answer["id"])
    assert edited.status_code == 201, edited.text
    assert sent_texts(api.model) == ["one", "answer 1", "two, better"]
    new_question = edited.json()["user_message"]
    assert new_question["siblings"] == [old_question["id"], new_question["id"]]

    shown = await api.client.get(f"/chats/{chat['id']}", headers=ann)
    body = shown.json()
    assert body["current_message_id"] == edited.json()["assistant_message"]["id"]
    assert body["message_count"] == 8
    assert [m["content"] for m in body["messages"]] == [
        "one",
        "answer 1",
        "two, better",
        "answer 4",
    ]
    assert body["messages"][2]["siblings"] == [old_question["id"], new_question["id"]]

    # The old branch, by its question: down to its newest leaf.
    back = await api.client.put(
        f"/chats/{chat['id']}/current", json={"message_id": old_question["id"]}, headers=ann
    )
    assert back.status_code == 200, back.text
    assert [m["content"] for m in back.json()["messages"]] == [
        "one",
        "answer 1",
        "two",
        "answer 2",
        "three",
        "answer 3",
    ]
    page = await api.client.get(f"/chats/{chat['id']}/messages?limit=2", headers=ann)
    assert [m["content"] for m in page.json()["items"]] == ["three", "answer 3"]


async def test_regenerating_twice_and_switching_between_the_three_answers(api: Api) -> None:
    ann = await api.sign_in("ann")
    chat = await api.new_chat(ann)
    api.model.plan(Reply(pieces=("first",)), Reply(pieces=("second",)), Reply(pieces=("third",)))
    first = (await api.send(ann, chat["id"], "Hi")).json()["assistant_message"]
    url = f"/chats/{chat['id']}/messages/{first['id']}/regenerate"
    second = await api.client.post(url, headers=ann)
    assert second.status_code == 201, second.text
    assert set(second.json()) == {"assistant_message"}
    streamed = await api.client.post(
        f"/chats/{chat['id']}/messages/{first['parent_id']}/regenerate",
        json={},
        headers={**ann, "Accept": "text/event-stream"},
    )
    assert streamed.status_code == 200, streamed.text
    events = parse_events(streamed.text)
    assert [name for name, _ in events] == ["assistant_message", "delta", "done"]
    assert events[0][1]["status"] == "streaming"
    third = events[-1][1]
    assert third["content"] == "third"
    answers = [first["id"], second.json()["assistant_message"]["id"], third["id"]]
    assert third["siblings"] == answers
    for answer_id, text in zip(answers, ("first", "second", "third"), strict=True):
        switched = await api.client.put(
            f"/chats/{chat['id']}/current", json={"message_id": answer_id}, headers=ann
        )
        assert switched.json()["current_message_id"] == answer_id
        assert switched.json()["messages"][-1]["content"] == text


async def test_branch_refusals_are_problems_and_store_nothing(api: Api) -> None:
    ann, bob = await api.sign_in("ann"), await api.sign_in("bob")
    mine, other = await api.new_chat(ann), await api.new_chat(ann)
    theirs = await api.new_chat(bob)
    elsewhere = (await api.send(ann, other["id"], "elsewhere")).json()["assistant_message"]
    assert_problem(await api.send(ann, mine["id"], "x", parent_id=elsewhere["id"]), 404)
    assert_problem(await api.send(ann, mine["id"], "x", model="gpt-9"), 422)
    for url in (
        f"/chats/{mine['id']}/messages/{elsewhere['id']}/regenerate",
        f"/chats/{theirs['id']}/messages/{elsewhere['id']}/regenerate",
    ):
        assert_problem(await api.client.post(url, headers=ann), 404)
    moved = await api.client.put(
        f"/chats/{mine['id']}/current", json={"message_id": elsewhere["id"]}, headers=ann
    )
    assert_problem(moved, 404)
    assert_problem(
        await api.client.put(
            f"/chats/{other['id']}/current", json={"message_id": elsewhere["id"]}, headers=bob
        ),
        404,
    )
    assert await api.messages(ann, mine["id"]) == []


async def test_a_send_or_regenerate_while_an_answer_is_written_is_409(
    served: tuple[str, dict[str, str], Database, int], model: GeminiStandIn
) -> None:
    base, auth, _, _ = served
    async with (
        httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client,
        httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as other,
    ):
        chat = (await client.post("/chats", json={"title": "t"})).json()
        first = (await client.post(f"/chats/{chat['id']}/messages", json={"content": "Hi"})).json()
        model.plan(Reply(pieces=("Partial",), hold=True))
        async with client.stream(
            "POST",
            f"/chats/{chat['id']}/messages",
            json={"content": "Tell me everything"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            lines = response.aiter_lines()  # kept: a dropped iterator would hang up
            async for line in lines:
                if line == "event: delta":
                    break  # the answer is being written
            refused = [
                await other.post(f"/chats/{chat['id']}/messages", json={"content": "and?"}),
                await other.post(
                    f"/chats/{chat['id']}/messages/{first['assistant_message']['id']}/regenerate"
                ),
            ]
            for response_409 in refused:
                problem = assert_problem(response_409, 409)
                assert problem["type"] == "answer-in-progress"
            await lines.aclose()
        # The client left, and the answer goes on: the chat stays busy until it is stopped.
        assert (
            await other.post(f"/chats/{chat['id']}/messages", json={"content": "now"})
        ).status_code == 409
        stopped = (await other.post(f"/chats/{chat['id']}/stop")).json()["stopped"]
        assert len(stopped) == 1
        sent = await other.post(f"/chats/{chat['id']}/messages", json={"content": "now"})
        assert sent.status_code == 201, sent.text
        shown = (await other.get(f"/chats/{chat['id']}")).json()["messages"]
        assert [m["content"] for m in shown][:2] == ["Hi", first["assistant_message"]["content"]]
        assert shown[-2]["content"] == "now"
