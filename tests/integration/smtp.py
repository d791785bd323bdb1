"""A real SMTP server for tests (aiosmtpd), on its own thread and event loop,
so a test in any event loop can send to it and read what arrived.

    with SmtpServer() as server:
        ... send to 127.0.0.1:server.port ...
        code = server.wait_for_code("ada@example.com")

It can require a login, speak STARTTLS or implicit TLS (see ``self_signed_tls``),
and refuse mail (``refuse`` at RCPT, ``refuse_data`` at DATA).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import errno
import ipaddress
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from .server import free_port

_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message as the server took it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    login: str | None
    """The user name the client logged in with, if it did."""

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else cast(EmailMessage, part).get_content()

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return "" if part is None else cast(EmailMessage, part).get_content()


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._server.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self._server.refuse:
            return "550 5.1.1 Recipient refused (test server told to refuse)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        if self._server.refuse_data:
            return "550 5.7.1 Message refused (test server told to refuse)"
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self._server._received(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=message,
                login=login,
            )
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    """An SMTP server on 127.0.0.1 and a free port, collecting what it receives.

    ``username``/``password`` make it require that login (over plain text too).
    ``tls_context`` (a server context) offers STARTTLS, required when
    ``require_starttls``; with ``implicit_tls`` it speaks TLS from the first byte
    instead. ``smtputf8`` offers SMTPUTF8 (non-ASCII mailboxes).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        smtputf8: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.refuse = False
        """Answer 550 to every recipient."""
        self.refuse_data = False
        """Answer 550 to every message body."""
        self.messages: list[ReceivedMail] = []
        self.port = 0
        self._arrived = threading.Condition()
        controller_kwargs: dict[str, Any] = {
            "auth_require_tls": False,
            # Offered or not, as a real server may (without it, like aiosmtpd's
            # default, a non-ASCII mailbox cannot be sent to).
            "enable_SMTPUTF8": smtputf8,
        }
        if username is not None:
            # Enforced at RCPT rather than with ``auth_required``, which warns on
            # every connection when login over plain text is allowed.
            controller_kwargs["authenticator"] = self._authenticate
        if tls_context is not None and implicit_tls:
            controller_kwargs["ssl_context"] = tls_context
        elif tls_context is not None:
            controller_kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        self._controller_kwargs = controller_kwargs
        self._controller: Controller | None = None

    def _authenticate(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        ok = login == self.username and auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _received(self, mail: ReceivedMail) -> None:
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()

    def start(self) -> SmtpServer:
        if self._controller is not None:
            raise RuntimeError("the SMTP server is already running")
        # The controller cannot listen on port 0 (it connects to its own port to
        # check it is up), so pick a free port and retry if someone takes it first.
        for _ in range(5):
            port = free_port()
            controller = Controller(
                _Handler(self), hostname=self.host, port=port, **self._controller_kwargs
            )
            try:
                controller.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError("found no free port for the SMTP server")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def mails_to(self, to: str) -> list[ReceivedMail]:
        """What arrived for ``to`` so far, oldest first."""
        with self._arrived:
            return [m for m in self.messages if to.casefold() in _casefolded(m.rcpt_tos)]

    def code_for(self, to: str) -> str | None:
        """The six-digit code in the newest mail to ``to``, if one has arrived."""
        mails = self.mails_to(to)
        if not mails:
            return None
        match = _CODE.search(mails[-1].text)
        return None if match is None else match.group()

    def wait_for_code(self, to: str, timeout: float = 5) -> str:
        """The code in the newest mail to ``to``, waiting up to ``timeout`` seconds.

        This blocks the calling thread. From a test whose own event loop must
        keep running meanwhile (an app sending the mail in the background), use
        ``await wait_for_code_async(...)``.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while (code := self.code_for(to)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no code arrived for {to} within {timeout} s")
                self._arrived.wait(left)
        return code

    async def wait_for_code_async(self, to: str, timeout: float = 5) -> str:  # noqa: ASYNC109
        """``wait_for_code`` without blocking the caller's event loop (same
        arguments as it, hence a ``timeout`` parameter on a coroutine)."""
        deadline = time.monotonic() + timeout
        while (code := self.code_for(to)) is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no code arrived for {to} within {timeout} s")
            await asyncio.sleep(0.02)
        return code


def _casefolded(addresses: tuple[str, ...]) -> set[str]:
    return {a.casefold() for a in addresses}


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server that accepts anything, without login or TLS."""
    with SmtpServer() as server:
        yield server


@dataclass(frozen=True, slots=True)
class TlsPair:
    server: ssl.SSLContext
    """For the SMTP server."""
    client: ssl.SSLContext
    """For the client: trusts only the server's self-signed certificate."""


def self_signed_tls() -> TlsPair:
    """A throwaway certificate for 127.0.0.1 and localhost, and contexts on both
    sides. Needs the ``cryptography`` package; skips the test without it."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain reads files only; the directory goes as soon as it is loaded.
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return TlsPair(server=server, client=client)
