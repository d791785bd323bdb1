from __future__ import annotations

import logging

import pytest

from adapters.mail import ConsoleMailer
from adapters.memory import RecordingMailer
from gemini_core.entities import OtpPurpose
from gemini_core.errors import UnavailableError
from gemini_core.mail import code_mail, duration_in_words


def test_verification_mail_says_what_the_code_is_for_and_how_long_it_lives() -> None:
    mail = code_mail(
        to="ada@example.com", purpose=OtpPurpose.EMAIL_VERIFICATION, code="042917", ttl_seconds=600
    )
    assert mail.to == "ada@example.com"
    assert mail.subject == "Verify your email address"
    for body in (mail.text, mail.html):
        assert "verify your email address" in body
        assert "042917" in body
        assert "10 minutes" in body
        assert "If you did not ask for this, ignore this mail" in body
        assert "ada@example.com" in body
        assert "Gemini" in body
    assert "\n    042917\n" in mail.text


def test_password_reset_mail_has_its_own_subject_and_wording() -> None:
    mail = code_mail(
        to="ada@example.com",
        purpose=OtpPurpose.PASSWORD_RESET,
        code="123456",
        ttl_seconds=3600,
        product="Acme Chat",
    )
    assert mail.subject == "Reset your password"
    assert "reset your password for Acme Chat" in mail.text
    assert "1 hour." in mail.text
    assert "123456" in mail.html
    assert "your password stays as it is" in mail.html


@pytest.mark.parametrize("purpose", list(OtpPurpose))
def test_the_code_never_goes_in_the_subject(purpose: OtpPurpose) -> None:
    mail = code_mail(to="a@example.com", purpose=purpose, code="987654", ttl_seconds=600)
    assert "987654" not in mail.subject


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "1 minute"),
        (90, "1 minute and 30 seconds"),
        (600, "10 minutes"),
        (3600, "1 hour"),
        (5400, "1 hour and 30 minutes"),
        (7200, "2 hours"),
        (3661, "1 hour, 1 minute and 1 second"),
        (86400, "24 hours"),
    ],
)
def test_durations_are_said_in_words(seconds: int, words: str) -> None:
    assert duration_in_words(seconds) == words


@pytest.mark.parametrize("seconds", [0, -5])
def test_a_duration_must_be_positive(seconds: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        duration_in_words(seconds)


def test_every_value_in_the_html_is_escaped() -> None:
    mail = code_mail(
        to="<script>alert(1)</script>@example.com",
        purpose=OtpPurpose.EMAIL_VERIFICATION,
        code="111111",
        ttl_seconds=600,
        product='<img src=x onerror="boom">',
    )
    assert "<script>" not in mail.html
    assert "<img" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in mail.html
    assert "&lt;img src=x onerror=&quot;boom&quot;&gt;" in mail.html
    # The plain text is not HTML; it keeps the values as they are.
    assert "<script>alert(1)</script>@example.com" in mail.text


async def test_console_mailer_logs_the_whole_text_once(caplog: pytest.LogCaptureFixture) -> None:
    mail = code_mail(
        to="ada@example.com", purpose=OtpPurpose.PASSWORD_RESET, code="314159", ttl_seconds=600
    )
    with caplog.at_level(logging.WARNING, logger="gemini.mail"):
        await ConsoleMailer().send(mail)
    [record] = [r for r in caplog.records if r.name == "gemini.mail"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("mail not sent (no SMTP_HOST); it would say:")
    assert "ada@example.com" in message
    assert "Reset your password" in message
    assert mail.text in message
    assert "314159" in message


async def test_recording_mailer_keeps_mails_and_finds_the_newest_code() -> None:
    mailer = RecordingMailer()
    for code, to in (("111111", "ada@example.com"), ("222222", "bob@example.com")):
        await mailer.send(
            code_mail(to=to, purpose=OtpPurpose.EMAIL_VERIFICATION, code=code, ttl_seconds=600)
        )
    await mailer.send(
        code_mail(
            to="ada@example.com", purpose=OtpPurpose.PASSWORD_RESET, code="333333", ttl_seconds=60
        )
    )
    assert [m.to for m in mailer.sent] == ["ada@example.com", "bob@example.com", "ada@example.com"]
    assert mailer.last_code("ada@example.com") == "333333"
    assert mailer.last_code("BOB@example.com") == "222222"
    with pytest.raises(LookupError, match="no mail"):
        mailer.last_code("eve@example.com")


async def test_recording_mailer_can_be_told_to_fail() -> None:
    mailer = RecordingMailer()
    mailer.fail_with = UnavailableError("The mail server could not be reached; try again later.")
    mail = code_mail(
        to="ada@example.com", purpose=OtpPurpose.EMAIL_VERIFICATION, code="123456", ttl_seconds=600
    )
    with pytest.raises(UnavailableError):
        await mailer.send(mail)
    assert mailer.sent == []
    mailer.fail_with = None
    await mailer.send(mail)
    assert mailer.sent == [mail]
