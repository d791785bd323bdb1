"""The core's error tree.

Every failure the core reports is a ``GeminiError``. Adapters translate their
libraries' exceptions into these at the boundary, and the web layer maps each
class to one HTTP status, so neither side needs to know the other.

    GeminiError
    ├── InvalidInputError        the request is well-formed but breaks a rule
    ├── VerificationFailedError  a code or a current password did not check out
    ├── AuthenticationError      who are you? (missing, bad or revoked credentials)
    ├── PermissionDeniedError    you may not do this
    ├── NotFoundError            no such thing, or not yours
    ├── ConflictError            it clashes with what exists (a taken email, ...)
    ├── PayloadTooLargeError     over a size limit or a storage quota
    ├── UnsupportedMediaTypeError  not a kind of content accepted here
    ├── TooManyRequestsError     slow down; ``retry_after`` says for how long
    │   ├── TooManyAnswersError    too many answers being written at once
    │   └── QuotaExceededError     a daily quota is used up until ``resets_at``
    ├── UpstreamError            the model failed or broke off its answer
    │   ├── UpstreamTimeoutError   the model took longer than allowed
    │   └── UpstreamQuotaError     the model's quota is spent; ``retry_after``
    └── UnavailableError         a dependency is down; try again later
"""

from __future__ import annotations

from datetime import datetime


class GeminiError(Exception):
    """Base of every error the core raises. ``kind`` names a problem a client
    may want to tell apart from others of the same status (``None``: the status
    says it all)."""

    kind: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(GeminiError):
    """A value breaks a rule of the domain; ``field`` names it when there is one."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class VerificationFailedError(GeminiError):
    """A one-time code or a confirming password was wrong, used or expired.

    Deliberately one generic message, so the caller learns nothing about why.
    """


class AuthenticationError(GeminiError):
    """The caller could not be identified."""


class PermissionDeniedError(GeminiError):
    """The caller is known but may not do this."""


class NotFoundError(GeminiError):
    """The thing does not exist, or belongs to someone else."""


class ConflictError(GeminiError):
    """The change clashes with existing data; ``field`` names the clashing value."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class AnswerInProgressError(ConflictError):
    """An answer of the chat is being written: one at a time per chat."""

    kind = "answer-in-progress"


class PayloadTooLargeError(GeminiError):
    """The content is larger than allowed, or would take its owner over a quota."""


class UnsupportedMediaTypeError(GeminiError):
    """The content is not of a kind accepted here (judged by its bytes, not its name)."""


class TooManyRequestsError(GeminiError):
    """A limit was reached; the caller may try again after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooManyAnswersError(TooManyRequestsError):
    """The user has as many answers being written as allowed at once."""

    kind = "too-many-answers"


class QuotaExceededError(TooManyRequestsError):
    """The user has used up a daily quota: ``used`` of ``quota`` (answers, or
    tokens, as ``unit`` says) until ``resets_at``, the next UTC midnight."""

    kind = "quota-exceeded"

    def __init__(
        self,
        detail: str,
        *,
        unit: str,
        quota: int,
        used: int,
        resets_at: datetime,
        retry_after: int,
    ) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.unit = unit
        self.quota = quota
        self.used = used
        self.resets_at = resets_at


class UpstreamError(GeminiError):
    """The model answered with an error, or its answer broke off mid-way."""


class UpstreamTimeoutError(UpstreamError):
    """The model took longer than the time allowed for one call."""


class UpstreamQuotaError(UpstreamError):
    """The model refused for quota or rate; try again after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int = 30) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# How long a caller is asked to wait (``Retry-After``) when a dependency is down.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class UnavailableError(GeminiError):
    """A dependency (database, mail server, model) cannot serve right now."""

    def __init__(self, detail: str, *, retry_after: int = UNAVAILABLE_RETRY_AFTER_SECONDS) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
