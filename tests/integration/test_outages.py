"""Outages of the database and of Redis, seen from outside: a real server
process, plain HTTP, and the dependency behind a proxy the test stops and
starts again.

The pool timeout here is long on purpose: a request that waits for the pool
during an outage would take it whole, so the answers that must come "at once"
are given a deadline of half of it, and one that waited would miss it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from adapters.postgres.pool import Database
from gemini_core.errors import UnavailableError

from .proxy import DatabaseProxy, TcpProxy
from .server import running_server, until

POOL_TIMEOUT_SECONDS = 20.0
AT_ONCE = POOL_TIMEOUT_SECONDS / 2  # a deadline, never reached unless something waits
ADMIN = {"ADMIN_EMAIL": "ops@example.com", "ADMIN_PASSWORD": "a long admin passphrase"}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0


def test_a_known_database_outage_answers_503_at_once_and_heals_by_itself(
    database_url: str, tmp_path: Path
) -> None:
    proxy = DatabaseProxy(database_url)
    proxy.start()
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": proxy.url,
        "DB_POOL_TIMEOUT_SECONDS": str(POOL_TIMEOUT_SECONDS),
        **ADMIN,
    }
    try:
        with (
            running_server(tmp_path, **env) as (_, base),
            httpx.Client(base_url=base, timeout=AT_ONCE) as client,
        ):
            login = client.post(
                "/auth/login",
                json={"email": ADMIN["ADMIN_EMAIL"], "password": ADMIN["ADMIN_PASSWORD"]},
            )
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert client.get("/chats", headers=auth).status_code == 200

            proxy.stop()
            # A report younger than a second may answer first; the next real
            # look finds the database gone, within /health's own deadline.
            health = until(lambda: client.get("/health"), lambda r: r.status_code != 200)
            assert_unavailable(health)
            assert health.json()["status"] == "unhealthy"
            assert health.json()["services"]["database"]["status"] == "unhealthy"
            # Known down now: nobody waits for the pool.
            for _ in range(3):
                assert_unavailable(client.get("/chats", headers=auth))
                assert_unavailable(client.get("/health/database"))
                assert_unavailable(client.get("/health"))

            proxy.start()
            deadline = time.monotonic() + 30
            while client.get("/chats", headers=auth).status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover"
                time.sleep(0.2)
            until(lambda: client.get("/health"), lambda r: r.status_code == 200)
            assert client.get("/health/database").status_code == 200
    finally:
        proxy.shutdown()


async def test_a_request_waiting_for_the_pool_is_released_when_the_database_goes(
    database_url: str,
) -> None:
    proxy = DatabaseProxy(database_url)
    proxy.start()
    database = Database(proxy.url, min_size=1, max_size=1, pool_timeout=POOL_TIMEOUT_SECONDS)
    await database.open()
    try:
        holding = asyncio.Event()

        async def hold_the_only_connection() -> None:
            async with database.connection() as conn:
                holding.set()
                await conn.execute("SELECT pg_sleep(60)")

        async def borrow() -> None:
            async with database.connection():
                pass

        holder = asyncio.create_task(hold_the_only_connection())
        await holding.wait()
        waiter = asyncio.create_task(borrow())
        await asyncio.sleep(0.3)  # in the pool's queue by now
        proxy.stop()
        async with asyncio.timeout(AT_ONCE):  # not the pool's timeout: released at once
            with pytest.raises(UnavailableError):
                await holder
            with pytest.raises(UnavailableError):
                await waiter
            with pytest.raises(UnavailableError):
                await borrow()
    finally:
        proxy.shutdown()
        await database.close()


async def test_an_exhausted_pool_still_waits_its_timeout_while_the_server_is_fine(
    database_url: str,
) -> None:
    database = Database(database_url, min_size=1, max_size=1, pool_timeout=1.0)
    await database.open()
    try:
        async with database.connection():
            for _ in range(2):  # and the first timeout does not make the second quick
                started = time.monotonic()
                with pytest.raises(UnavailableError):
                    async with database.connection():
                        pass
                assert time.monotonic() - started >= 0.9

            async def borrow_soon() -> bool:
                async with database.connection() as conn:
                    return (await (await conn.execute("SELECT 1 AS one")).fetchone()) == {"one": 1}

            waiting = asyncio.create_task(borrow_soon())
            await asyncio.sleep(0.3)
        assert await waiting  # it waited, and got the connection once it was free
        assert (await database.check()).healthy
    finally:
        await database.close()


async def test_borrowers_beyond_the_pool_take_turns_and_a_cancelled_one_frees_its_turn(
    database_url: str,
) -> None:
    database = Database(database_url, min_size=1, max_size=3, pool_timeout=5.0)
    await database.open()
    try:
        busy = most = 0

        async def borrow() -> None:
            nonlocal busy, most
            async with database.connection() as conn:
                busy += 1
                most = max(most, busy)
                try:
                    await conn.execute("SELECT pg_sleep(0.01)")
                finally:
                    busy -= 1

        # Borrowers cancelled while they wait (or once they hold a connection).
        for _ in range(5):
            waiter = asyncio.create_task(borrow())
            others = [asyncio.create_task(borrow()) for _ in range(4)]
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(*others, waiter, return_exceptions=True)
        await asyncio.gather(*(borrow() for _ in range(30)))
        assert most == 3
        assert database.stats()["pool_size"] <= 3

        # Every turn came back: three at once still get a connection each.
        held, all_in = asyncio.Event(), asyncio.Event()
        done = 0

        async def hold() -> None:
            nonlocal done
            async with database.connection():
                done += 1
                if done == 3:
                    all_in.set()
                await held.wait()

        holders = [asyncio.create_task(hold()) for _ in range(3)]
        async with asyncio.timeout(5):
            await all_in.wait()
        held.set()
        await asyncio.gather(*holders)
    finally:
        await database.close()


REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL")
def test_a_redis_outage_costs_health_one_warning_a_minute(
    database_url: str, tmp_path: Path
) -> None:
    upstream = urlsplit(REDIS_URL)
    proxy = TcpProxy.to(upstream.hostname or "127.0.0.1", upstream.port or 6379)
    proxy.start()
    log = tmp_path / "server.log"
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}{upstream.path or '/0'}",
        "LOG_FORMAT": "json",
    }
    try:
        with running_server(tmp_path, log, **env) as (_, base):
            proxy.stop()
            get = lambda: httpx.get(f"{base}/health", timeout=30)  # noqa: E731
            until(get, lambda r: r.json()["status"] == "degraded")
            for _ in range(5):
                health = get()
                assert health.status_code == 200
                assert health.json()["status"] == "degraded"
    finally:
        proxy.shutdown()
    warnings = [
        record
        for record in map(_json_or_none, log.read_text().splitlines())
        if record
        and record.get("level") == "WARNING"
        and record.get("logger") == "gemini_core.health"
    ]
    assert len(warnings) == 1, warnings


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
