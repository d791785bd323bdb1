"""Hostile and malformed input against the real server in production mode:
each answers a clear 4xx and none reaches the error log as a server fault."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from .api import assert_problem
from .server import running_server
from .test_operations import ADMIN, production_env


def _nested(depth: int) -> bytes:
    return b'{"email": ' + b"[" * depth + b"]" * depth + b', "password": "x"}'


def test_bodies_that_cannot_be_decoded_or_are_not_json_answer_4xx_quietly(
    database_url: str, tmp_path: Path
) -> None:
    env = production_env(tmp_path, database_url, RATE_LIMIT_ENABLED="false")
    with running_server(tmp_path, **env) as (process, base):
        with httpx.Client(base_url=base, timeout=30) as client:
            json_type = {"Content-Type": "application/json"}
            for depth in (1_000, 100_000):
                response = client.post("/auth/login", content=_nested(depth), headers=json_type)
                assert "nested too deeply" in assert_problem(response, 400)["detail"]
            login = client.post("/auth/login", json=ADMIN)
            token = login.json()["access_token"]
            deep = client.post(
                "/chats",
                content=b'{"title": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
                headers={**json_type, "Authorization": f"Bearer {token}"},
            )
            assert_problem(deep, 400)

            as_text = client.post(
                "/auth/login",
                content=b'{"email": "root@example.com", "password": "a long admin passphrase"}',
                headers={"Content-Type": "text/plain"},
            )
            assert "application/json" in assert_problem(as_text, 415)["detail"]
            as_form = client.post("/auth/login", data={"email": "a@b.co", "password": "x"})
            assert_problem(as_form, 415)
            # JSON with a charset, or a structured +json type, is still JSON.
            charset = {"Content-Type": "application/json; charset=utf-8"}
            login_again = client.post("/auth/login", json=ADMIN, headers=charset)
            assert login_again.status_code == 200
            assert client.get("/health").status_code == 200  # still serving
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0

    errors = tmp_path / "logs" / "error.log"
    assert not errors.exists() or errors.read_text() == ""
    app_log = (tmp_path / "logs" / "app.log").read_text()
    assert "RecursionError" not in app_log
    assert "Traceback" not in app_log
