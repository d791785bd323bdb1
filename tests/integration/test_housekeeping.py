"""Housekeeping on PostgreSQL: one process at a time (an advisory lock), and
the services purge by themselves while they run."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from adapters.bootstrap import CoreConfig, DatabaseConfig, open_services
from adapters.postgres.locks import PostgresExclusiveLock
from adapters.postgres.pool import Database
from adapters.postgres.repositories import PostgresOtpRepository
from gemini_core.entities import NewOtpVerification, OtpPurpose
from gemini_core.housekeeping import HousekeepingRules

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


async def test_the_lock_has_one_holder_across_pools(database_url: str, database: Database) -> None:
    other = Database(database_url, min_size=1, max_size=2)
    await other.open()
    try:
        here, there = PostgresExclusiveLock(database), PostgresExclusiveLock(other)
        async with here.hold("purge") as first:
            assert first is True
            async with there.hold("purge") as second:
                assert second is False  # never waits
            async with there.hold("another name") as unrelated:
                assert unrelated is True
        async with there.hold("purge") as after:
            assert after is True  # let go with the context
    finally:
        await other.close()


async def test_running_services_purge_expired_codes_by_themselves(
    database_url: str, database: Database
) -> None:
    otps = PostgresOtpRepository(database)
    stale = await otps.add(
        NewOtpVerification(
            email="old@example.com",
            purpose=OtpPurpose.EMAIL_VERIFICATION,
            code_hash="h",
            expires_at=datetime.now(UTC) - timedelta(hours=2),
        )
    )
    fresh = await otps.add(
        NewOtpVerification(
            email="new@example.com",
            purpose=OtpPurpose.EMAIL_VERIFICATION,
            code_hash="h",
            expires_at=datetime.now(UTC) + timedelta(minutes=10),
        )
    )
    config = CoreConfig(
        secret_key=SECRET,
        database=DatabaseConfig(url=database_url, pool_min_size=1, pool_max_size=4),
        housekeeping=HousekeepingRules(every_seconds=0.05, keep_codes=timedelta(hours=1)),
    )
    purged = asyncio.Event()

    class OnPurge(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "event", None) == "purged":
                purged.set()

    watcher = OnPurge()
    logger = logging.getLogger("gemini_core.housekeeping")
    logger.addHandler(watcher)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with open_services(config):
            async with asyncio.timeout(30):
                await purged.wait()  # the first round runs at start-up
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)
    assert await otps.latest("old@example.com", OtpPurpose.EMAIL_VERIFICATION) is None
    assert await otps.latest("new@example.com", OtpPurpose.EMAIL_VERIFICATION) == fresh
    assert stale.id != fresh.id
