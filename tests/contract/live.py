"""The service as a client meets it: ``gemini-backend serve`` on a fresh
database, mailing its codes to a test SMTP server, and accounts signed up
through the API with the code read from the mail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.api import settings_env
from tests.integration.server import running_server
from tests.integration.smtp import SmtpServer

PASSWORD = "contract passphrase 7"


@dataclass(frozen=True, slots=True)
class Account:
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class LiveServer:
    base_url: str
    smtp: SmtpServer
    log: Path
    """The server's stderr, for a failing test to read."""

    @property
    def document_url(self) -> str:
        return f"{self.base_url}/schema/openapi.json"

    def document(self) -> dict[str, Any]:
        response = httpx.get(self.document_url, timeout=30)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def sign_up(self, username: str) -> Account:
        """A normal user, registered with the code the server mailed."""
        email = f"{username}@example.com"
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            sent = client.post(
                "/auth/send-otp", json={"email": email, "purpose": "email_verification"}
            )
            assert sent.status_code == 202, sent.text
            registered = client.post(
                "/auth/register",
                json={
                    "email": email,
                    "otp_code": self.smtp.wait_for_code(email),
                    "user_data": {
                        "email": email,
                        "username": username,
                        "password": PASSWORD,
                        "full_name": "Contract Tester",
                    },
                },
            )
            assert registered.status_code == 201, registered.text
        return Account(email, PASSWORD)


@pytest.fixture
def live_server(tmp_path: Path, database_url: str, smtp_server: SmtpServer) -> Iterator[LiveServer]:
    """``gemini-backend serve`` with the offline model and no rate limits (a fuzzer
    would spend its cases on 429s), needing nothing beyond PostgreSQL and mail."""
    env = settings_env(tmp_path, database_url, smtp_server, LLM_PROVIDER="echo", REDIS_URL="")
    log = tmp_path / "server.log"
    with running_server(tmp_path, log, **env) as (_, base_url):
        yield LiveServer(base_url=base_url, smtp=smtp_server, log=log)
