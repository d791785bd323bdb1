"""One-time codes: six digits, mailed, stored only as a keyed hash.

A code lives ``ttl_seconds``, is used once, and dies after ``max_attempts``
tries (then even the right code fails). A new code for the same email and
purpose replaces the old one. Issuing is limited per email, whatever the
purpose: one per ``resend_cooldown_seconds`` and ``max_per_hour`` in any hour.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gemini_core.entities import NewOtpVerification, OtpPurpose, OtpVerification
from gemini_core.errors import (
    GeminiError,
    TooManyRequestsError,
    VerificationFailedError,
)
from gemini_core.mail import code_mail
from gemini_core.ports import Clock, Mailer, OtpRepository

security_log = logging.getLogger("gemini.security")

BAD_CODE = "The code is wrong, expired or already used; ask for a new one."
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CodeRules:
    ttl_seconds: int = 600
    max_attempts: int = 5
    resend_cooldown_seconds: int = 60
    max_per_hour: int = 5


class OneTimeCodes:
    def __init__(
        self,
        *,
        otps: OtpRepository,
        mailer: Mailer,
        clock: Clock,
        key: bytes,
        rules: CodeRules,
    ) -> None:
        self._otps = otps
        self._mailer = mailer
        self._clock = clock
        self._key = key
        self._rules = rules

    @property
    def ttl_seconds(self) -> int:
        return self._rules.ttl_seconds

    def _digest(self, email: str, purpose: OtpPurpose, code: str) -> str:
        message = f"{purpose.value}\x00{email}\x00{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _refuse_if_too_soon(self, now: datetime, issued: Sequence[datetime]) -> None:
        """``TooManyRequestsError`` if the cooldown since this email's latest code
        (any purpose) or the hourly cap forbids another code now."""
        if issued:
            ready_at = issued[-1] + timedelta(seconds=self._rules.resend_cooldown_seconds)
            if now < ready_at:
                wait = math.ceil((ready_at - now).total_seconds())
                raise TooManyRequestsError(
                    f"A code was sent moments ago; ask again in {wait} seconds.", retry_after=wait
                )
        # A code issued exactly an hour ago has just left the window.
        in_window = [moment for moment in issued if moment > now - HOUR]
        if len(in_window) >= self._rules.max_per_hour:
            oldest_counted = in_window[-self._rules.max_per_hour]
            wait = max(1, math.ceil((oldest_counted + HOUR - now).total_seconds()))
            raise TooManyRequestsError(
                "Too many codes for this address this hour; try again later.", retry_after=wait
            )

    async def send(self, email: str, purpose: OtpPurpose) -> None:
        """Issue a code and mail it. If the mail cannot be handed over, the code
        is forgotten and the mailer's ``UnavailableError`` propagates.

        The limits are checked and the code stored as one step per email, so
        they hold exactly however many requests for one address race, in
        however many processes.
        """
        now = self._clock.now()
        code = f"{secrets.randbelow(1_000_000):06d}"
        cooldown = timedelta(seconds=self._rules.resend_cooldown_seconds)
        otp = await self._otps.add_if_allowed(
            NewOtpVerification(
                email=email,
                purpose=purpose,
                code_hash=self._digest(email, purpose, code),
                expires_at=now + timedelta(seconds=self._rules.ttl_seconds),
            ),
            since=now - max(HOUR, cooldown),
            allow=lambda issued: self._refuse_if_too_soon(now, issued),
        )
        mail = code_mail(to=email, purpose=purpose, code=code, ttl_seconds=self._rules.ttl_seconds)
        try:
            await self._mailer.send(mail)
        except GeminiError:
            await self._otps.delete(otp.id)
            raise

    async def check(self, email: str, purpose: OtpPurpose, code: str) -> OtpVerification:
        """The live code matching ``code``, not yet consumed; ``VerificationFailedError``
        for anything else. Every try counts against the code's attempts."""
        otp = await self._otps.latest(email, purpose)
        now = self._clock.now()
        if otp is None or otp.consumed_at is not None or now >= otp.expires_at:
            security_log.info("code refused", extra={"event": "otp_invalid", "email": email})
            raise VerificationFailedError(BAD_CODE)
        # Count the try before comparing, so concurrent guesses share the budget.
        attempts = await self._otps.record_attempt(otp.id)
        if attempts > self._rules.max_attempts:
            security_log.warning("code exhausted", extra={"event": "otp_exhausted", "email": email})
            raise VerificationFailedError(BAD_CODE)
        if not hmac.compare_digest(otp.code_hash, self._digest(email, purpose, code)):
            event = "otp_exhausted" if attempts == self._rules.max_attempts else "otp_wrong"
            security_log.warning(
                "wrong code", extra={"event": event, "email": email, "attempts": attempts}
            )
            raise VerificationFailedError(BAD_CODE)
        return otp

    async def consume(self, otp: OtpVerification) -> None:
        """Spend a checked code; of two requests racing with it, one loses here."""
        if not await self._otps.consume(otp.id, self._clock.now()):
            raise VerificationFailedError(BAD_CODE)
