"""Housekeeping: forgetting one-time codes and sessions nobody can use any more.

Expired codes and ended sessions (expired or revoked) stay a while, for the
hourly code cap and for an admin looking into a sign-in, then go. The purge
runs in every process on a timer, but only one process at a time does the
work: the others find the lock taken and skip that round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from gemini_core.ports import Clock, ExclusiveLock, OtpRepository, SessionRepository

log = logging.getLogger(__name__)

PURGE_LOCK = "purge expired codes and sessions"


@dataclass(frozen=True, slots=True)
class HousekeepingRules:
    every_seconds: float = 3600.0
    """How often each process tries to purge."""
    keep_codes: timedelta = timedelta(days=1)
    """How long an expired code is kept (the hourly cap needs an hour at least)."""
    keep_sessions: timedelta = timedelta(days=30)
    """How long an expired or revoked session is kept."""


@dataclass(frozen=True, slots=True)
class Purged:
    codes: int
    sessions: int


class Housekeeping:
    def __init__(
        self,
        *,
        otps: OtpRepository,
        sessions: SessionRepository,
        clock: Clock,
        lock: ExclusiveLock,
        rules: HousekeepingRules,
    ) -> None:
        if rules.keep_codes < timedelta(hours=1):
            raise ValueError(
                "expired codes must be kept an hour at least: the hourly cap counts them"
            )
        self._otps = otps
        self._sessions = sessions
        self._clock = clock
        self._lock = lock
        self._rules = rules

    async def purge(self) -> Purged | None:
        """Purge once; ``None`` when another process is purging right now."""
        async with self._lock.hold(PURGE_LOCK) as held:
            if not held:
                return None
            now = self._clock.now()
            purged = Purged(
                codes=await self._otps.purge_expired(now - self._rules.keep_codes),
                sessions=await self._sessions.purge_ended(now - self._rules.keep_sessions),
            )
        if purged.codes or purged.sessions:
            log.info(
                "purged %d expired codes and %d ended sessions",
                purged.codes,
                purged.sessions,
                extra={"event": "purged", "codes": purged.codes, "sessions": purged.sessions},
            )
        return purged

    async def run(self, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Purge now and then every ``every_seconds``, until cancelled. A round
        that fails (the database is down, say) is logged and the next one tried."""
        while True:
            try:
                await self.purge()
            except Exception:
                log.warning("purging expired codes and sessions failed", exc_info=True)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancellation that reached the purge as some other error,
                # or not at all, still ends the loop.
                raise asyncio.CancelledError
            await sleep(self._rules.every_seconds)
