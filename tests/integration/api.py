"""A client for the HTTP API in integration tests: sign-up with codes read
from a real SMTP server, and the app wired to PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.bootstrap import Repositories
from adapters.postgres.pool import Database
from web.app import create_app
from web.settings import load_settings

from .smtp import SmtpServer

PASSWORD = "correct horse battery"


@dataclass
class Api:
    client: AsyncTestClient[Litestar]
    smtp: SmtpServer
    app: Litestar
    repos: Repositories
    """The app's tables, read and written directly (a pool of the test's own)."""

    async def send_code(self, email: str, purpose: str = "email_verification") -> str:
        response = await self.client.post(
            "/auth/send-otp", json={"email": email, "purpose": purpose}
        )
        assert response.status_code == 202, response.text
        return await self.smtp.wait_for_code_async(email)

    async def register(
        self, email: str, username: str, password: str = PASSWORD, **user_data: Any
    ) -> dict[str, Any]:
        code = await self.send_code(email)
        response = await self.client.post(
            "/auth/register",
            json={
                "email": email,
                "otp_code": code,
                "user_data": {
                    "email": email,
                    "username": username,
                    "password": password,
                    "full_name": "Ann Example",
                    **user_data,
                },
            },
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.client.post("/auth/login", json={"email": email, "password": password})

    async def get(self, path: str, token: str) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {token}"})

    async def post(self, path: str, token: str, body: Any = None) -> httpx.Response:
        return await self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.client.post("/auth/refresh", json={"refresh_token": refresh_token})


def settings_env(
    tmp_path: Path, database_url: str, smtp: SmtpServer, **extra: str
) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "FROM_EMAIL": "codes@gemini.test",
        "OTP_RESEND_COOLDOWN_SECONDS": "0",
        # These tests are about the accounts; the rate limits have their own
        # (test_operations.py, test_redis.py).
        "RATE_LIMIT_ENABLED": "false",
        **extra,
    }


@pytest.fixture
async def api(
    tmp_path: Path,
    database_url: str,
    database: Database,
    smtp_server: SmtpServer,
) -> AsyncIterator[Api]:
    settings = load_settings(
        environ=settings_env(tmp_path, database_url, smtp_server), env_file=None
    )
    app = create_app(settings=settings)
    async with AsyncTestClient(app) as client:
        yield Api(
            client=client, smtp=smtp_server, app=app, repos=Repositories.on_postgres(database)
        )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def parse_events(text: str) -> list[tuple[str, Any]]:
    """A Server-Sent Events body as ``(event, decoded data)`` pairs, in order."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events
