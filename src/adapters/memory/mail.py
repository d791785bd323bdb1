"""A mailer that keeps what it is given, for tests. (SMTP and the console
mailer: ``adapters.mail``.)"""

from __future__ import annotations

import re

from gemini_core.ports import OutgoingMail

__all__ = ["RecordingMailer"]

_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")


class RecordingMailer:
    """An in-memory ``Mailer`` for tests: keeps what it was given in ``sent``.

    Set ``fail_with`` (usually an ``UnavailableError``) to make ``send`` raise
    it instead, as a mail server that is down would.
    """

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.sent: list[OutgoingMail] = []
        self.fail_with = fail_with

    async def send(self, mail: OutgoingMail) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(mail)

    def last_code(self, to: str) -> str:
        """The six-digit code in the newest mail to ``to``.

        ``LookupError`` when no mail went there, or the newest carries no code.
        """
        for mail in reversed(self.sent):
            if mail.to.casefold() == to.casefold():
                match = _CODE.search(mail.text)
                if match is None:
                    raise LookupError(f"the newest mail to {to} carries no code")
                return match.group()
        raise LookupError(f"no mail was sent to {to}")
