"""The chat routes end to end with the other two model adapters: an
OpenAI-compatible server (a local stand-in of /v1/chat/completions, reached by
the real adapter over HTTP) and the offline echo model, each alone and then
both in one deployment (`LLM_MODELS` with provider prefixes, `GET /models`).
The Gemini adapter's run of the same routes is test_chats.py."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import FastPasswordHasher
from adapters.postgres.pool import Database
from adapters.postgres.users import PostgresUserRepository
from gemini_core.entities import NewUser
from tests.images import png
from web.app import create_app
from web.settings import load_settings

from .api import PASSWORD, parse_events
from .gemini_standin import GeminiStandIn
from .openai_standin import OpenAiStandIn
from .server import running_server
from .standin import Reply


def base_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "DATABASE_URL": database_url,
        "LLM_TIMEOUT_SECONDS": "2",
        "RATE_LIMIT_ENABLED": "false",
    }


@pytest.fixture
def openai_model() -> Iterator[OpenAiStandIn]:
    with OpenAiStandIn() as standin:
        yield standin


async def client_for(
    env: dict[str, str],
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    app = create_app(settings=load_settings(environ=env, env_file=None))
    database = Database(env["DATABASE_URL"], min_size=1, max_size=1)
    await database.open()
    async with AsyncTestClient(app, timeout=30) as client:
        await PostgresUserRepository(database).add(
            NewUser(
                email="ann@example.com",
                username="ann",
                password_hash=await FastPasswordHasher().hash(PASSWORD),
                is_verified=True,
            )
        )
        await database.close()
        login = await client.post(
            "/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
        )
        yield client, {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture
async def openai_api(
    tmp_path: Path, database_url: str, openai_model: OpenAiStandIn
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    env = base_env(tmp_path, database_url) | {
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": openai_model.url,
        "OPENAI_MODEL": "local-model",
        "OPENAI_API_KEY": "sk-test",
    }
    async for pair in client_for(env):
        yield pair


@pytest.fixture
async def echo_api(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    async for pair in client_for(base_env(tmp_path, database_url)):
        yield pair


async def test_openai_compatible_answers_with_history_system_prompt_and_images(
    openai_api: tuple[AsyncTestClient[Litestar], dict[str, str]], openai_model: OpenAiStandIn
) -> None:
    client, auth = openai_api
    chat = (
        await client.post("/chats", json={"title": "t", "system_prompt": "Be brief."}, headers=auth)
    ).json()
    assert chat["model"] == "local-model"
    first = await client.post(f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=auth)
    assert first.status_code == 201, first.text
    answer = first.json()["assistant_message"]
    assert (answer["content"], answer["status"], answer["model"]) == (
        "Hello, world!",
        "complete",
        "local-model",
    )
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (11, 7)

    picture = png(2, 2)
    upload = await client.post(
        "/upload", files={"file": ("p.png", picture, "image/png")}, headers=auth
    )
    file_id = upload.json()["id"]
    second = await client.post(
        f"/chats/{chat['id']}/messages",
        json={"content": "And this?", "file_ids": [file_id]},
        headers=auth,
    )
    assert second.status_code == 201, second.text
    sent = openai_model.requests[-1].body
    assert sent["stream"] is True
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Be brief."
    assert sent["messages"][1]["content"] in ("Hi", [{"type": "text", "text": "Hi"}])
    parts = sent["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "And this?"}
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == picture


async def test_openai_compatible_streams_and_fails_cleanly(
    openai_api: tuple[AsyncTestClient[Litestar], dict[str, str]], openai_model: OpenAiStandIn
) -> None:
    client, auth = openai_api
    chat = (await client.post("/chats", json={"title": "t"}, headers=auth)).json()
    path = f"/chats/{chat['id']}/messages"
    streamed = await client.post(
        path, json={"content": "Hi"}, headers={**auth, "Accept": "text/event-stream"}
    )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_events(streamed.text)
    names = [name for name, _ in events]
    assert names[:2] == ["user_message", "assistant_message"]
    assert set(names[2:-1]) == {"delta"}
    assert names[-1] == "done"
    assert "".join(data["text"] for name, data in events if name == "delta") == "Hello, world!"

    openai_model.plan(Reply(status=500))
    failed = await client.post(path, json={"content": "Again"}, headers=auth)
    assert failed.status_code == 502
    openai_model.plan(Reply(status=429, headers={"Retry-After": "7"}))
    quota = await client.post(path, json={"content": "Once more"}, headers=auth)
    assert quota.status_code == 429
    assert quota.headers["retry-after"]
    messages = (await client.get(f"/chats/{chat['id']}", headers=auth)).json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "failed"),
        ("user", "complete"),
        ("assistant", "failed"),
    ]


async def test_the_offline_model_answers_and_streams_in_pieces(
    echo_api: tuple[AsyncTestClient[Litestar], dict[str, str]],
) -> None:
    client, auth = echo_api
    chat = (await client.post("/chats", json={}, headers=auth)).json()
    assert chat["model"] == "echo"
    assert_unknown = await client.post("/chats", json={"model": "gpt-9"}, headers=auth)
    assert assert_unknown.status_code == 422
    path = f"/chats/{chat['id']}/messages"
    answered = await client.post(path, json={"content": "Plan a trip to Rome"}, headers=auth)
    assert answered.status_code == 201
    text = answered.json()["assistant_message"]["content"]
    assert "offline" in text
    assert "Plan a trip to Rome" in text
    streamed = await client.post(
        path, json={"content": "Hello"}, headers={**auth, "Accept": "text/event-stream"}
    )
    names = [name for name, _ in parse_events(streamed.text)]
    assert names[:2] == ["user_message", "assistant_message"]
    assert names[-1] == "done"
    assert names.count("delta") >= 1


# --- several providers in one deployment ---------------------------------------------


@pytest.fixture
async def mixed_api(
    tmp_path: Path, database_url: str, openai_model: OpenAiStandIn
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    env = base_env(tmp_path, database_url) | {
        "LLM_PROVIDER": "echo",
        "OPENAI_BASE_URL": openai_model.url,
        "LLM_MODELS": "openai:local-model",
    }
    async for pair in client_for(env):
        yield pair


async def test_one_deployment_answers_each_chat_from_its_models_provider(
    mixed_api: tuple[AsyncTestClient[Litestar], dict[str, str]], openai_model: OpenAiStandIn
) -> None:
    client, auth = mixed_api
    assert (await client.get("/models")).status_code == 401
    listed = await client.get("/models", headers=auth)
    assert listed.status_code == 200
    assert listed.json() == {
        "items": [
            {"id": "echo", "provider": "echo", "default": True},
            {"id": "local-model", "provider": "openai", "default": False},
        ]
    }

    # Titled chats: no title call reaches a model, so every call below is an answer.
    local = (
        await client.post("/chats", json={"title": "l", "model": "local-model"}, headers=auth)
    ).json()
    offline = (await client.post("/chats", json={"title": "o"}, headers=auth)).json()
    assert (local["model"], offline["model"]) == ("local-model", "echo")

    answered = await client.post(
        f"/chats/{local['id']}/messages", json={"content": "Hi"}, headers=auth
    )
    assert answered.status_code == 201, answered.text
    answer = answered.json()["assistant_message"]
    assert (answer["content"], answer["model"]) == ("Hello, world!", "local-model")
    assert [r.body["model"] for r in openai_model.requests] == ["local-model"]

    echoed = await client.post(
        f"/chats/{offline['id']}/messages", json={"content": "Plan a trip"}, headers=auth
    )
    assert echoed.status_code == 201, echoed.text
    answer = echoed.json()["assistant_message"]
    assert answer["model"] == "echo"
    assert "offline echo model" in answer["content"]
    assert "Plan a trip" in answer["content"]
    assert len(openai_model.requests) == 1  # the stand-in never heard of it


def test_a_real_server_answers_with_gemini_and_a_second_provider_side_by_side(
    tmp_path: Path, database_url: str, openai_model: OpenAiStandIn
) -> None:
    """`make run`'s server with Gemini as the default and an OpenAI-compatible
    model beside it: a chat on Gemini asks the second provider for one answer."""
    with GeminiStandIn() as gemini:
        env = base_env(tmp_path, database_url) | {
            "GOOGLE_API_KEY": "test-key",
            "GEMINI_BASE_URL": gemini.url,
            "GEMINI_MODEL": "gemini-test",
            "OPENAI_BASE_URL": openai_model.url,
            "LLM_MODELS": "openai:local-model",
            "ADMIN_EMAIL": "root@example.com",
            "ADMIN_PASSWORD": "a long admin passphrase",
        }
        gemini.plan(Reply(pieces=("From", " Gemini")))
        openai_model.plan(Reply(pieces=("From", " the", " local", " model")))
        with running_server(tmp_path, **env) as (_, base), httpx.Client(base_url=base) as client:
            login = client.post(
                "/auth/login",
                json={"email": "root@example.com", "password": "a long admin passphrase"},
            )
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            models = client.get("/models").json()["items"]
            assert [(m["id"], m["provider"]) for m in models] == [
                ("gemini-test", "gemini"),
                ("local-model", "openai"),
            ]
            chat = client.post("/chats", json={"title": "side by side"}).json()
            first = client.post(f"/chats/{chat['id']}/messages", json={"content": "Hi"})
            assert first.status_code == 201, first.text
            assert first.json()["assistant_message"]["content"] == "From Gemini"
            second = client.post(
                f"/chats/{chat['id']}/messages/{first.json()['assistant_message']['id']}"
                "/regenerate",
                json={"model": "local-model"},
            )
            assert second.status_code == 201, second.text
            answer = second.json()["assistant_message"]
            assert (answer["model"], answer["content"]) == ("local-model", "From the local model")
            assert answer["siblings"] == [first.json()["assistant_message"]["id"], answer["id"]]
    assert [r.body["model"] for r in openai_model.requests] == ["local-model"]
    assert len(gemini.requests) == 1
