"""The ``OtpRepository`` port (one-time codes) in memory."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from adapters.memory.store import StoreRepository, utc
from gemini_core.entities import NewOtpVerification, OtpPurpose, OtpVerification
from gemini_core.errors import NotFoundError
from gemini_core.ports import IssueGuard

__all__ = ["InMemoryOtpRepository"]


class InMemoryOtpRepository(StoreRepository):
    def _for(self, email: str) -> Iterator[OtpVerification]:
        wanted = email.lower()
        return (otp for otp in self._store.otps.values() if otp.email.lower() == wanted)

    async def add(self, otp: NewOtpVerification) -> OtpVerification:
        now = self._now()
        # Earlier unused codes are retired (marked consumed), not deleted: the
        # hourly cap counts every code issued.
        for earlier in builtins.list(self._for(otp.email)):
            if earlier.purpose == otp.purpose and earlier.consumed_at is None:
                self._store.otps[earlier.id] = replace(earlier, consumed_at=now)
        stored = OtpVerification(
            id=self._store.next_id("otps"),
            email=otp.email,
            purpose=otp.purpose,
            code_hash=otp.code_hash,
            attempts=0,
            expires_at=utc(otp.expires_at),
            consumed_at=None,
            created_at=now,
        )
        self._store.otps[stored.id] = stored
        return stored

    async def latest(self, email: str, purpose: OtpPurpose) -> OtpVerification | None:
        codes = [otp for otp in self._for(email) if otp.purpose == purpose]
        return max(codes, key=lambda otp: otp.id, default=None)

    async def add_if_allowed(
        self, otp: NewOtpVerification, *, since: datetime, allow: IssueGuard
    ) -> OtpVerification:
        # No await between the check and the store: one step on the event loop.
        allow(sorted(code.created_at for code in self._for(otp.email) if code.created_at >= since))
        return await self.add(otp)

    async def record_attempt(self, otp_id: int) -> int:
        otp = self._store.otps.get(otp_id)
        if otp is None:
            raise NotFoundError("No such code.")
        self._store.otps[otp_id] = replace(otp, attempts=otp.attempts + 1)
        return otp.attempts + 1

    async def consume(self, otp_id: int, at: datetime) -> bool:
        otp = self._store.otps.get(otp_id)
        if otp is None or otp.consumed_at is not None:
            return False
        self._store.otps[otp_id] = replace(otp, consumed_at=utc(at))
        return True

    async def delete(self, otp_id: int) -> None:
        self._store.otps.pop(otp_id, None)

    async def purge_expired(self, before: datetime) -> int:
        expired = [otp.id for otp in self._store.otps.values() if otp.expires_at < before]
        for otp_id in expired:
            del self._store.otps[otp_id]
        return len(expired)
