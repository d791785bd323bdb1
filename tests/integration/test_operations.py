"""Operations on the real server process: a graceful stop under load,
production JSON logs from several workers, and metrics summed over workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.images import png
from web.app import create_app
from web.settings import load_settings

from .gemini_standin import GeminiStandIn, Reply
from .server import running_server

ADMIN = {"email": "root@example.com", "password": "a long admin passphrase"}


def production_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "production",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "LOG_DIR": str(tmp_path / "logs"),
        "SECRET_KEY": "k3y-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "SMTP_HOST": "127.0.0.1",
        "LLM_PROVIDER": "echo",
        "ALLOWED_HOSTS": "127.0.0.1",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        **extra,
    }


def samples(exposition: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in a Prometheus text exposition."""
    found = {}
    for line in exposition.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match[1] or ""] = float(match[2])
    return found


# --- SIGTERM ---------------------------------------------------------------------------


async def _logins_across_a_sigterm(
    base: str, process: subprocess.Popen[bytes], count: int
) -> list[int]:
    """Start ``count`` logins (each hashes a password: slow-ish), send SIGTERM
    once the first has answered, and return every status."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        calls = [asyncio.create_task(client.post("/auth/login", json=ADMIN)) for _ in range(count)]
        done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) < count, "every request finished before the signal: make them slower"
        process.send_signal(signal.SIGTERM)
        return [response.status_code for response in await asyncio.gather(*calls)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_loses_no_request(
    database_url: str, tmp_path: Path, workers: str
) -> None:
    env = production_env(tmp_path, database_url, WORKERS=workers, RATE_LIMIT_ENABLED="false")
    with running_server(tmp_path, **env) as (process, base):
        statuses = asyncio.run(_logins_across_a_sigterm(base, process, 24))
        assert statuses == [200] * 24
        assert process.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/health", timeout=2)


async def _stream_across_a_sigterm(
    base: str, process: subprocess.Popen[bytes]
) -> tuple[list[str], dict[str, object]]:
    """Sign in, open a chat, stream an answer and send SIGTERM after its first
    piece; return the names of the events received and the last event's data."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post("/auth/login", json=ADMIN)
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        chat = (await client.post("/chats", json={"title": "t"}, headers=auth)).json()
        names: list[str] = []
        data: dict[str, object] = {}
        headers = {**auth, "Accept": "text/event-stream"}
        body = {"content": "Count slowly"}
        async with client.stream(
            "POST", f"/chats/{chat['id']}/messages", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
                    if names.count("delta") == 1:
                        process.send_signal(signal.SIGTERM)
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
        return names, data


def test_sigterm_lets_a_stream_finish(database_url: str, tmp_path: Path) -> None:
    with GeminiStandIn() as model:
        model.plan(Reply(pieces=("One", " two", " three", " four", " five"), delay=0.3))
        env = {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": database_url,
            "GOOGLE_API_KEY": "test-key",
            "GEMINI_BASE_URL": model.url,
            "GEMINI_MODEL": "gemini-test",
            "ADMIN_EMAIL": ADMIN["email"],
            "ADMIN_PASSWORD": ADMIN["password"],
            "RATE_LIMIT_ENABLED": "false",
        }
        with running_server(tmp_path, **env) as (process, base):
            names, done = asyncio.run(_stream_across_a_sigterm(base, process))
            assert names == ["user_message", "assistant_message", *["delta"] * 5, "done"]
            assert done["content"] == "One two three four five"
            assert done["status"] == "complete"
            assert process.wait(timeout=60) == 0


# --- production logs -----------------------------------------------------------------


def test_production_logs_are_json_lines_from_every_worker(
    database_url: str, tmp_path: Path
) -> None:
    env = production_env(tmp_path, database_url, WORKERS="2")
    with running_server(tmp_path, **env) as (process, base):
        request_ids = [f"req-{n}" for n in range(12)]
        for request_id in request_ids:  # fresh connections: both workers answer
            headers = {"X-Request-ID": request_id}
            assert httpx.get(f"{base}/auth/me", headers=headers).status_code == 401
        wrong = {"email": ADMIN["email"], "password": "not it"}
        assert httpx.post(f"{base}/auth/login", json=wrong).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0

    lines = (tmp_path / "logs" / "app.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    fields = {"timestamp", "level", "logger", "message", "module", "function", "line"}
    for entry in entries:
        assert fields | {"request_id", "user_id"} <= set(entry)
    access = [e for e in entries if e["logger"] == "gemini.access"]
    assert {e["request_id"] for e in access} >= set(request_ids)
    me = [e for e in access if e["request_id"] in request_ids]
    assert {(e["method"], e["route"], e["status"], e["client"]) for e in me} == {
        ("GET", "/auth/me", 401, "127.0.0.1")
    }
    security = [e for e in entries if e["logger"] == "gemini.security"]
    assert security[-1]["event"] == "login_failed"


# --- metrics -------------------------------------------------------------------------


def test_metrics_are_summed_over_the_workers(database_url: str, tmp_path: Path) -> None:
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "WORKERS": "2",
        "RATE_LIMIT_REQUESTS": "1000",
    }
    with running_server(tmp_path, **env) as (process, base):
        for _ in range(20):  # fresh connections: both workers answer
            assert httpx.get(f"{base}/auth/me").status_code == 401
        text = httpx.get(f"{base}/metrics").text
        requests = samples(text, "gemini_http_requests_total")
        assert requests['{method="GET",route="/auth/me",status="401"}'] == 20
        latency = samples(text, "gemini_http_request_duration_seconds_count")
        assert latency['{method="GET",route="/auth/me",status="401"}'] == 20
        decisions = samples(text, "gemini_rate_limit_decisions_total")
        assert decisions['{decision="allowed",limit="default"}'] == 20
        pool = samples(text, "gemini_database_pool_connections")
        assert pool['{figure="pool_max"}'] >= 20  # at least one worker's pool of 20
        assert samples(text, "gemini_database_up") == {"": 1.0}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


async def test_metrics_cover_requests_limits_uploads_logins_and_model_calls(
    tmp_path: Path, database_url: str
) -> None:
    """Metrics made from what really happens: an app on PostgreSQL, signed in,
    uploading, chatting with the offline model and failing a login."""
    env = {
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app, timeout=30) as client:
        await client.get("/auth/me")
        wrong = await client.post("/auth/login", json={**ADMIN, "password": "not it at all"})
        assert wrong.status_code == 401
        token = (await client.post("/auth/login", json=ADMIN)).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        upload = await client.post("/upload", files={"file": ("a.png", png())}, headers=auth)
        assert upload.status_code == 201, upload.text
        for _ in range(2):
            assert (await client.get(upload.json()["url"], headers=auth)).status_code == 200
        chat = (await client.post("/chats", json={}, headers=auth)).json()
        sent = await client.post(
            f"/chats/{chat['id']}/messages", json={"content": "Hi"}, headers=auth
        )
        assert sent.status_code == 201, sent.text
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for family in (
        "gemini_http_requests_total",
        "gemini_http_request_duration_seconds_bucket",
        "gemini_rate_limit_decisions_total",
        "gemini_database_up",
        "gemini_model_calls_total",
        "gemini_model_call_duration_seconds_bucket",
        "gemini_model_tokens_total",
        "gemini_uploads_total",
        "gemini_login_failures_total",
    ):
        assert samples(text, family), family
    assert samples(text, "gemini_model_calls_total") == {'{model="echo",outcome="ok"}': 1}
    assert samples(text, "gemini_uploads_total") == {'{content_type="image/png"}': 1}
    assert samples(text, "gemini_login_failures_total") == {'{reason="wrong_password"}': 1}
    tokens = samples(text, "gemini_model_tokens_total")
    assert tokens['{kind="prompt",model="echo",provider="echo"}'] > 0
    assert samples(text, "gemini_database_up") == {"": 1}
    if os.environ.get("REDIS_URL"):  # the record cache is used only when shared
        cache = samples(text, "gemini_cache_lookups_total")
        assert (cache['{result="miss"}'], cache['{result="hit"}']) == (1, 1)
