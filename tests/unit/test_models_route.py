"""``GET /models`` over the real HTTP layer on in-memory adapters: the
deployment's models with their providers, the default first, for a signed-in
caller only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory import FastPasswordHasher, RecordingMailer
from gemini_core.accounts import Client, Registration
from gemini_core.entities import OtpPurpose
from web.app import create_app
from web.composition import memory_container
from web.settings import load_settings

Signed = tuple[AsyncTestClient[Litestar], dict[str, str]]


@pytest.fixture
async def signed_in(tmp_path: Path) -> AsyncIterator[Signed]:
    settings = load_settings(
        environ={
            "ENVIRONMENT": "test",
            "DATA_DIR": str(tmp_path),
            "RATE_LIMIT_ENABLED": "false",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODELS": "openai:llama3.2, openai:qwen2.5:7b",
        },
        env_file=None,
    )
    mailer = RecordingMailer()
    container = memory_container(settings, mailer=mailer, hasher=FastPasswordHasher())
    await container.accounts.send_code("ann@example.com", OtpPurpose.EMAIL_VERIFICATION)
    pair = await container.accounts.register(
        "ann@example.com",
        mailer.last_code("ann@example.com"),
        Registration(email="ann@example.com", username="ann", password="a fine passphrase"),
        Client(),
    )
    async with AsyncTestClient(create_app(container)) as client:
        yield client, {"Authorization": f"Bearer {pair.access_token}"}
    await container.chats.aclose()


async def test_models_are_listed_with_their_provider_default_first(signed_in: Signed) -> None:
    client, auth = signed_in

    response = await client.get("/models", headers=auth)

    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {"id": "echo", "provider": "echo", "default": True},
            {"id": "llama3.2", "provider": "openai", "default": False},
            {"id": "qwen2.5:7b", "provider": "openai", "default": False},
        ]
    }
    # Each listed id is one a chat may pick.
    chat = await client.post("/chats", json={"model": "qwen2.5:7b"}, headers=auth)
    assert chat.status_code == 201
    assert chat.json()["model"] == "qwen2.5:7b"


async def test_models_need_a_signed_in_caller(signed_in: Signed) -> None:
    client, _ = signed_in

    response = await client.get("/models")

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    bad = await client.get("/models", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
