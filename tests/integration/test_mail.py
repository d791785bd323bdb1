"""SmtpMailer against a real SMTP server (aiosmtpd on its own thread)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from adapters.mail import SmtpMailer, SmtpSecurity
from gemini_core.entities import OtpPurpose
from gemini_core.errors import InvalidInputError, UnavailableError
from gemini_core.mail import code_mail
from gemini_core.ports import OutgoingMail

from .smtp import SmtpServer, TlsPair, self_signed_tls, smtp_server

__all__ = ["smtp_server"]  # the fixture, imported so pytest finds it here

TO = "ada@example.com"


def _mail(code: str = "482913") -> OutgoingMail:
    return code_mail(to=TO, purpose=OtpPurpose.EMAIL_VERIFICATION, code=code, ttl_seconds=600)


def _mailer(port: int, *, security: SmtpSecurity = "none", **kwargs: object) -> SmtpMailer:
    return SmtpMailer(
        host="127.0.0.1",
        port=port,
        security=security,
        from_email="Gemini <noreply@gemini.test>",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture(scope="module")
def tls() -> TlsPair:
    return self_signed_tls()


async def test_delivers_a_code_mail_in_text_and_html(smtp_server: SmtpServer) -> None:
    await _mailer(smtp_server.port).send(_mail("482913"))

    [received] = smtp_server.mails_to(TO)
    message = received.message
    assert received.mail_from == "noreply@gemini.test"
    assert received.rcpt_tos == (TO,)
    assert message["From"] == "Gemini <noreply@gemini.test>"
    assert message["To"] == TO
    assert message["Subject"] == "Verify your email address"
    assert "482913" not in message["Subject"]
    assert message["Date"]
    assert message["Message-ID"].endswith("@gemini.test>")
    assert message.get_content_type() == "multipart/alternative"
    assert "482913" in received.text
    assert "482913" in received.html
    assert "10 minutes" in received.text
    assert received.html.lstrip().startswith("<!DOCTYPE html>")
    assert smtp_server.wait_for_code(TO) == "482913"
    assert await smtp_server.wait_for_code_async(TO) == "482913"


async def test_logs_in_when_a_username_is_set() -> None:
    with SmtpServer(username="mailer", password="s3cret") as server:
        await _mailer(server.port, username="mailer", password="s3cret").send(_mail())
        [received] = server.mails_to(TO)
        assert received.login == "mailer"


async def test_a_wrong_password_is_unavailable_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with SmtpServer(username="mailer", password="s3cret") as server:
        mailer = _mailer(server.port, username="mailer", password="wrong-pa55word")
        with (
            caplog.at_level(logging.WARNING, logger="gemini.mail"),
            pytest.raises(UnavailableError, match="could not be reached") as caught,
        ):
            await mailer.send(_mail())
        assert server.messages == []
    assert caught.value.__cause__ is not None
    assert "wrong-pa55word" not in caplog.text
    assert "SMTPAuthenticationError" in caplog.text
    assert "127.0.0.1" in caplog.text


async def test_a_server_that_requires_login_refuses_a_mailer_without_one() -> None:
    with SmtpServer(username="mailer", password="s3cret") as server:
        with pytest.raises(UnavailableError):
            await _mailer(server.port).send(_mail())
        assert server.messages == []


async def test_a_refused_recipient_is_unavailable(smtp_server: SmtpServer) -> None:
    smtp_server.refuse = True
    with pytest.raises(UnavailableError):
        await _mailer(smtp_server.port).send(_mail())
    assert smtp_server.messages == []


async def test_a_refused_message_is_unavailable(smtp_server: SmtpServer) -> None:
    smtp_server.refuse_data = True
    with pytest.raises(UnavailableError):
        await _mailer(smtp_server.port).send(_mail())
    assert smtp_server.messages == []


async def test_nothing_listening_is_unavailable_at_once(closed_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        await _mailer(closed_port, timeout_seconds=5).send(_mail())
    assert time.monotonic() - started < 1
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_server_that_never_answers_is_unavailable_after_the_timeout(
    silent_port: int,
) -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await _mailer(silent_port, timeout_seconds=1).send(_mail())
    assert time.monotonic() - started < 3


async def test_starttls_upgrades_the_connection(tls: TlsPair) -> None:
    with SmtpServer(
        tls_context=tls.server,
        require_starttls=True,
        username="mailer",
        password="s3cret",
    ) as server:
        mailer = _mailer(
            server.port,
            security="starttls",
            tls_context=tls.client,
            username="mailer",
            password="s3cret",
        )
        await mailer.send(_mail("271828"))
        assert server.wait_for_code(TO) == "271828"


async def test_starttls_refuses_a_certificate_it_does_not_trust(tls: TlsPair) -> None:
    with SmtpServer(tls_context=tls.server, require_starttls=True) as server:
        with pytest.raises(UnavailableError):
            await _mailer(server.port, security="starttls").send(_mail())
        assert server.messages == []


async def test_starttls_fails_against_a_server_without_it(smtp_server: SmtpServer) -> None:
    with pytest.raises(UnavailableError):
        await _mailer(smtp_server.port, security="starttls").send(_mail())
    assert smtp_server.messages == []


async def test_implicit_tls(tls: TlsPair) -> None:
    with SmtpServer(tls_context=tls.server, implicit_tls=True) as server:
        await _mailer(server.port, security="tls", tls_context=tls.client).send(_mail("161803"))
        assert server.wait_for_code(TO) == "161803"


async def test_security_none_never_upgrades_even_when_offered(tls: TlsPair) -> None:
    with SmtpServer(tls_context=tls.server) as server:
        # The mailer would not trust this certificate; "none" never asks to see it.
        await _mailer(server.port, security="none").send(_mail("141421"))
        assert server.wait_for_code(TO) == "141421"


async def test_a_non_ascii_mailbox_without_smtputf8_is_the_callers_error(
    smtp_server: SmtpServer,
) -> None:
    to = "\uff41\uff4e\uff4e@example.com"  # full-width "ann"
    mail = code_mail(to=to, purpose=OtpPurpose.EMAIL_VERIFICATION, code="123456", ttl_seconds=60)
    with pytest.raises(InvalidInputError) as refused:
        await _mailer(smtp_server.port).send(mail)
    assert refused.value.field == "email"
    assert smtp_server.messages == []


async def test_a_non_ascii_mailbox_goes_out_where_smtputf8_is_offered() -> None:
    to = "jos\u00e9@example.com"
    mail = code_mail(to=to, purpose=OtpPurpose.EMAIL_VERIFICATION, code="654321", ttl_seconds=60)
    with SmtpServer(smtputf8=True) as server:
        await _mailer(server.port).send(mail)
        [received] = server.mails_to(to)
    assert received.rcpt_tos == (to,)
    assert received.message["To"] == to
    assert "654321" in received.text
