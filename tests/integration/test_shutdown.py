"""SIGTERM while answers stream for longer than ``SHUTDOWN_TIMEOUT_SECONDS``,
on the real server (granian, two workers) with a slow stand-in of the model.

Granian kills a worker that is still busy when the timeout is up, so the
worker must end such answers itself before then: each is stored ``failed``
with the text received so far, a streaming reader gets an ``error`` event, a
waiting one a 503 problem, and the server exits on its own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg

from .api import assert_problem
from .gemini_standin import GeminiStandIn, Reply
from .server import running_server

ADMIN = {"email": "root@example.com", "password": "a long admin passphrase"}
SHUTDOWN_TIMEOUT_SECONDS = 4  # small, to keep the test quick
# About a minute of answer: far beyond the timeout, so only the worker's own
# deadline can end it in time.
ENDLESS = Reply(pieces=("Once", " upon", " a", " time", *[" and so on"] * 240), delay=0.25)


async def _answers_across_a_sigterm(
    base: str, process: subprocess.Popen[bytes], model: GeminiStandIn
) -> tuple[list[tuple[str, Any]], httpx.Response]:
    """One answer waited for as JSON and one streamed, both under way when
    SIGTERM arrives (after the streamed one's first piece); return the
    streamed events and the JSON response."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post("/auth/login", json=ADMIN)
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        waited, streamed = [
            (await client.post("/chats", json={"title": title}, headers=auth)).json()["id"]
            for title in ("waited", "streamed")
        ]
        body = {"content": "Tell me a long story"}
        answered = asyncio.create_task(
            client.post(f"/chats/{waited}/messages", json=body, headers=auth)
        )
        await model.wait_until(lambda: len(model.requests) == 1)
        events: list[tuple[str, Any]] = []
        name = ""
        headers = {**auth, "Accept": "text/event-stream"}
        async with client.stream(
            "POST", f"/chats/{streamed}/messages", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
                    if name == "delta" and [n for n, _ in events].count("delta") == 1:
                        process.send_signal(signal.SIGTERM)
        return events, await answered


def _assistant_messages(database_url: str) -> dict[str, tuple[str, str]]:
    """``{chat title: (status, content)}`` of the stored answers."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT chats.title, messages.status, messages.content"
            " FROM messages JOIN chats ON chats.id = messages.chat_id"
            " WHERE messages.role = 'assistant'"
        ).fetchall()
    return {title: (status, content) for title, status, content in rows}


def test_sigterm_ends_answers_longer_than_the_timeout_as_failed_with_their_text(
    database_url: str, tmp_path: Path
) -> None:
    with GeminiStandIn() as model:
        model.plan(ENDLESS, ENDLESS)
        env = {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": database_url,
            "GOOGLE_API_KEY": "test-key",
            "GEMINI_BASE_URL": model.url,
            "GEMINI_MODEL": "gemini-test",
            "LLM_TIMEOUT_SECONDS": "120",
            "ADMIN_EMAIL": ADMIN["email"],
            "ADMIN_PASSWORD": ADMIN["password"],
            "RATE_LIMIT_ENABLED": "false",
            "WORKERS": "2",
            "SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
        }
        with running_server(tmp_path, **env) as (process, base):
            events, answered = asyncio.run(_answers_across_a_sigterm(base, process, model))
            assert process.wait(timeout=30) == 0

    names = [name for name, _ in events]
    assert names[:2] == ["user_message", "assistant_message"]
    assert names[-1] == "error", names
    assert set(names[2:-1]) == {"delta"}
    error = events[-1][1]
    assert error["status"] == 503
    assert "shutting down" in error["detail"]
    streamed_text = "".join(data["text"] for name, data in events if name == "delta")

    problem = assert_problem(answered, 503)
    assert "shutting down" in problem["detail"]
    assert answered.headers["Retry-After"]

    stored = _assistant_messages(database_url)
    assert stored["streamed"] == ("failed", streamed_text)
    status, waited_text = stored["waited"]
    assert status == "failed"
    assert waited_text.startswith("Once upon a time"), waited_text
