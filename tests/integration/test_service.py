"""The service on a real PostgreSQL: health, restarts, outages, and the real
server process started the way `make run` starts it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from web.app import create_app
from web.composition import open_container
from web.container import Container

from .proxy import DatabaseProxy
from .server import running_server, settings_for
from .smtp import SmtpServer, smtp_server  # noqa: F401  (a fixture)

ROOT = ("root@example.com", "a long admin passphrase")


async def emails(container: Container) -> list[str]:
    page = await container.admin.list_users(page=1, size=10, query=None)
    return [user.email for user in page.items]


async def test_health_on_postgres(database_url: str, tmp_path: Path) -> None:
    app = create_app(settings=settings_for(tmp_path, database_url))
    async with AsyncTestClient(app) as client:
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert health.json()["services"]["database"]["status"] == "healthy"
        database = await client.get("/health/database")
        assert database.status_code == 200
        pool = database.json()["pool"]
        assert pool["pool_max"] == 20
        assert pool["pool_size"] >= 1


async def test_data_written_before_a_restart_is_there_after_it(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    async with open_container(settings) as container:
        await container.accounts.ensure_admin(*ROOT)
    async with open_container(settings) as container:
        assert await emails(container) == [ROOT[0]]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: PostgreSQL's unix socket path must stay under ~100 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="gm"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_the_embedded_database_keeps_its_data_across_restarts(short_tmp: Path) -> None:
    data_dir = short_tmp
    settings = settings_for(data_dir, None)
    assert settings.resolved_database_url is None
    async with open_container(settings) as container:
        await container.accounts.ensure_admin(*ROOT)
        assert (await container.health.check_database()).healthy
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    async with open_container(settings) as container:
        assert await emails(container) == [ROOT[0]]


async def test_a_stopped_database_gives_quick_503s_and_the_service_recovers(
    database_url: str, tmp_path: Path
) -> None:
    proxy = DatabaseProxy(database_url)
    proxy.start()
    try:
        settings = settings_for(tmp_path, proxy.url, DB_POOL_TIMEOUT_SECONDS="1.5")
        app = create_app(settings=settings)
        async with AsyncTestClient(app, timeout=30) as client:
            assert (await client.get("/health")).status_code == 200
            unknown = {"email": "nobody@example.com", "password": "not a password"}

            # The database stays down until every answer is in, so an answer
            # at all means the service stopped waiting for it by itself (the
            # pool's timeout, or the breaker), and it says when to come back.
            # How soon is a latency, which the tests do not time.
            proxy.stop()
            for response in (
                await client.get("/health/database"),
                await client.post("/auth/login", json=unknown),
            ):
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) > 0
            # /health may answer from its report of up to a second ago, then looks again.
            deadline = time.monotonic() + 15
            while (health := await client.get("/health")).status_code == 200:
                assert time.monotonic() < deadline, "/health did not see the outage"
                await asyncio.sleep(0.1)
            assert health.status_code == 503, health.text
            assert int(health.headers["retry-after"]) > 0
            assert health.json()["status"] == "unhealthy"

            proxy.start()
            deadline = time.monotonic() + 30
            while (await client.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover"
                await asyncio.sleep(0.5)
            assert (await client.post("/auth/login", json=unknown)).status_code == 401
    finally:
        proxy.shutdown()


# --- the real server process ----------------------------------------------------


def test_serve_on_the_embedded_database_answers_and_stops_cleanly(
    tmp_path: Path, short_tmp: Path
) -> None:
    data_dir = short_tmp
    for _ in range(2):  # the second start finds the first one's data
        with running_server(tmp_path, DATA_DIR=str(data_dir)) as (process, base):
            body = httpx.get(f"{base}/health").json()
            assert body["status"] == "healthy"
            assert body["services"]["database"]["status"] == "healthy"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    assert (data_dir / "postgres" / "PG_VERSION").exists()


def test_serve_on_a_configured_database_with_two_workers(database_url: str, tmp_path: Path) -> None:
    with running_server(
        tmp_path, DATA_DIR=str(tmp_path), DATABASE_URL=database_url, WORKERS="2"
    ) as (
        process,
        base,
    ):
        for _ in range(10):
            assert httpx.get(f"{base}/health/database").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not (tmp_path / "postgres").exists(), "pgserver must not be touched"


def test_a_revocation_holds_in_every_worker(
    database_url: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "WORKERS": "2",
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "OTP_RESEND_COOLDOWN_SECONDS": "0",
    }
    with running_server(tmp_path, **env) as (process, base):
        with httpx.Client(base_url=base, timeout=10) as client:
            email = "ann@example.com"
            sent = client.post(
                "/auth/send-otp", json={"email": email, "purpose": "email_verification"}
            )
            assert sent.status_code == 202
            code = smtp_server.wait_for_code(email)
            user = {"email": email, "username": "ann", "password": "a fine passphrase"}
            pair = client.post(
                "/auth/register", json={"email": email, "otp_code": code, "user_data": user}
            ).json()
            headers = {"Authorization": f"Bearer {pair['access_token']}"}
            # Fresh connections, so the two workers share the requests.
            for _ in range(6):
                assert httpx.get(f"{base}/auth/me", headers=headers).status_code == 200
            assert client.post("/auth/logout", headers=headers).status_code == 204
            for _ in range(6):
                assert httpx.get(f"{base}/auth/me", headers=headers).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
