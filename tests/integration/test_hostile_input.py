"""Hostile and malformed input against the real server in production mode:
each answers a clear 4xx and none reaches the error log as a server fault."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from .api import PASSWORD, assert_problem, settings_env
from .server import running_server
from .smtp import SmtpServer
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


def test_addresses_that_cannot_be_mailed_are_422_not_an_outage(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """The SMTP server here offers no SMTPUTF8, like many relays."""
    env = settings_env(tmp_path, database_url, smtp_server)
    with running_server(tmp_path, **env) as (_, base), httpx.Client(base_url=base) as client:

        def send(email: str) -> httpx.Response:
            body = {"email": email, "purpose": "email_verification"}
            return client.post("/auth/send-otp", json=body)

        for email in (
            "\uff41\uff4e\uff4e@example.com",  # full-width "ann"
            "jos\u00e9@example.com",
            "an\u200bn@example.com",  # a zero-width space
            "ann@exa\u200bmple.com",
            "ann\u202e@example.com",  # a direction override
            "a..b@example.com",
        ):
            problem = assert_problem(send(email), 422)
            assert problem["errors"][0]["field"] == "email"
        assert smtp_server.messages == []

        # An international domain is mailed in its IDNA form, which is what is kept.
        assert send("Ann@B\u00fccher.example").status_code == 202
        code = smtp_server.wait_for_code("ann@xn--bcher-kva.example")
        user_data = {"email": "ann@bücher.example", "username": "ann", "password": PASSWORD}
        registered = client.post(
            "/auth/register",
            json={"email": "ann@xn--bcher-kva.example", "otp_code": code, "user_data": user_data},
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["user"]["email"] == "ann@xn--bcher-kva.example"
        login = client.post(
            "/auth/login", json={"email": "ANN@bücher.example", "password": PASSWORD}
        )
        assert login.status_code == 200
