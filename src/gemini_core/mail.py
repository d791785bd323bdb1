"""The mails the core sends: one-time codes, in plain text and HTML.

Composing is pure (no I/O), so the wording is tested without a mail server;
a ``Mailer`` adapter only delivers what ``code_mail`` returns.

The code never goes in the subject: subjects show up in lock-screen
notification previews and in mail server logs, where a code must not.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from gemini_core.entities import OtpPurpose
from gemini_core.ports import OutgoingMail


@dataclass(frozen=True, slots=True)
class _Wording:
    subject: str
    use: str
    """What the code does, after "Use this code to"."""
    if_not_you: str


_WORDING = {
    OtpPurpose.EMAIL_VERIFICATION: _Wording(
        subject="Verify your email address",
        use="verify your email address",
        if_not_you="If you did not ask for this, ignore this mail.",
    ),
    OtpPurpose.PASSWORD_RESET: _Wording(
        subject="Reset your password",
        use="reset your password",
        if_not_you=("If you did not ask for this, ignore this mail; your password stays as it is."),
    ),
}


def code_mail(
    *, to: str, purpose: OtpPurpose, code: str, ttl_seconds: int, product: str = "Gemini"
) -> OutgoingMail:
    """The mail that carries a one-time ``code`` for ``purpose`` to ``to``.

    ``ttl_seconds`` is how long the code lives, said in words ("10 minutes").
    """
    wording = _WORDING[purpose]
    lifetime = duration_in_words(ttl_seconds)
    text = (
        f"{wording.subject}\n"
        "\n"
        f"Use this code to {wording.use} for {product}:\n"
        "\n"
        f"    {code}\n"
        "\n"
        f"The code expires in {lifetime}. Do not share it with anyone.\n"
        "\n"
        f"{wording.if_not_you}\n"
        "\n"
        f"This mail was sent to {to}.\n"
    )
    return OutgoingMail(
        to=to,
        subject=wording.subject,
        text=text,
        html=_html(wording, to=to, code=code, lifetime=lifetime, product=product),
    )


def duration_in_words(seconds: int) -> str:
    """``seconds`` as a person says it: "10 minutes", "1 hour and 30 minutes"."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {seconds}")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{count} {unit}{'' if count == 1 else 's'}"
        for count, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second"))
        if count
    ]
    if len(parts) == 1:
        return parts[0]
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def _html(wording: _Wording, *, to: str, code: str, lifetime: str, product: str) -> str:
    e = html.escape
    return f"""\
<!DOCTYPE html>
<html lang="en">
<body style="margin:0;padding:24px;background:#f6f8fa;\
font-family:Arial,Helvetica,sans-serif;color:#1f2328;">
<div style="max-width:480px;margin:0 auto;padding:24px;background:#ffffff;\
border-radius:8px;">
<h1 style="margin:0 0 16px;font-size:20px;">{e(wording.subject)}</h1>
<p style="margin:0 0 16px;font-size:15px;">Use this code to {e(wording.use)} \
for {e(product)}:</p>
<p style="margin:0 0 16px;font-size:32px;font-weight:bold;letter-spacing:6px;\
font-family:'Courier New',monospace;">{e(code)}</p>
<p style="margin:0 0 16px;font-size:15px;">The code expires in {e(lifetime)}. \
Do not share it with anyone.</p>
<p style="margin:0 0 16px;font-size:13px;color:#59636e;">{e(wording.if_not_you)}</p>
<p style="margin:0;font-size:12px;color:#59636e;">This mail was sent to {e(to)}.</p>
</div>
</body>
</html>
"""
