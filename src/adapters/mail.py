"""Mailers: SMTP for real, and the log for development. (A recording fake for
tests: ``adapters.memory.RecordingMailer``.)

``SmtpMailer`` translates every failure of the mail server (refused,
unreachable, too slow, wrong login) into ``UnavailableError``: for the caller
they all mean the same thing, the code did not go out. The one failure that is
the caller's is an address the server cannot carry (a non-ASCII mailbox when
the server does not offer SMTPUTF8): that is ``InvalidInputError``, a 422, not
an outage anyone could trigger at will.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

import aiosmtplib

from gemini_core.errors import InvalidInputError, UnavailableError
from gemini_core.ports import OutgoingMail

logger = logging.getLogger("gemini.mail")

SmtpSecurity = Literal["starttls", "tls", "none"]

_UNREACHABLE = "The mail server could not be reached; try again later."
_NOT_MAILABLE = (
    "We cannot send mail to an address with non-ASCII characters before the @; use another address."
)


class SmtpMailer:
    """The ``Mailer`` port on an SMTP server, one connection per mail.

    ``security`` is ``starttls`` (upgrade a plain connection, usually port 587),
    ``tls`` (implicit TLS, usually port 465) or ``none``. ``tls_context``
    decides which certificates to trust; the default trusts the system's.
    ``timeout_seconds`` bounds each step and the whole exchange.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        security: SmtpSecurity = "starttls",
        from_email: str,
        timeout_seconds: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._username = username or None
        self._password = password
        self._security = security
        self._from_email = from_email
        self._sender = parseaddr(from_email)[1] or from_email
        self._timeout = timeout_seconds
        self._tls_context = tls_context

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self._host!r}, port={self._port}, security={self._security!r})"

    def _message(self, mail: OutgoingMail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._from_email
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(usegmt=True)
        _, at, domain = self._sender.rpartition("@")
        message["Message-ID"] = make_msgid(domain=domain if at and domain else None)
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        return message

    async def send(self, mail: OutgoingMail) -> None:
        message = self._message(mail)
        try:
            # aiosmtplib's timeout is per step; a server that answers each step
            # just in time must not hold the caller longer than one bound in all.
            async with asyncio.timeout(self._timeout):
                refused, _ = await aiosmtplib.send(
                    message,
                    sender=self._sender,
                    recipients=[mail.to],
                    hostname=self._host,
                    port=self._port,
                    username=self._username,
                    password=self._password if self._username else None,
                    use_tls=self._security == "tls",
                    start_tls=self._security == "starttls",
                    tls_context=self._tls_context,
                    timeout=self._timeout,
                )
        except aiosmtplib.SMTPNotSupported as exc:
            if mail.to.isascii():
                raise self._unreachable(exc) from exc
            logger.info("mail not sent: %s:%d does not offer SMTPUTF8", self._host, self._port)
            raise InvalidInputError(_NOT_MAILABLE, field="email") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if refused:
            logger.warning(
                "mail not sent: %s:%d refused the recipient (%s)",
                self._host,
                self._port,
                next(iter(refused.values())).code,
            )
            raise UnavailableError(_UNREACHABLE)

    def _unreachable(self, exc: BaseException) -> UnavailableError:
        logger.warning("mail not sent: %s from %s:%d", type(exc).__name__, self._host, self._port)
        return UnavailableError(_UNREACHABLE)


class ConsoleMailer:
    """The ``Mailer`` port for development without a mail server: the mail goes
    to the log, whole, so the developer can read the code there."""

    async def send(self, mail: OutgoingMail) -> None:
        logger.warning(
            "mail not sent (no SMTP_HOST); it would say:\nTo: %s\nSubject: %s\n\n%s",
            mail.to,
            mail.subject,
            mail.text,
        )
