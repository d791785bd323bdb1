"""What the core reports about its own work, for metrics and logs.

The services tell a ``Telemetry`` what happened, in typed events; adapters
decide what becomes of them (Prometheus metrics, log lines, a list in a
test). The core never imports a metrics library and never smuggles numbers
through log records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ModelCallPurpose = Literal["answer", "title"]
ModelCallOutcome = Literal["ok", "error", "timeout", "quota", "cancelled"]
LoginFailureReason = Literal["unknown_email", "wrong_password"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One call to a model, however it ended."""

    purpose: ModelCallPurpose
    model: str
    outcome: ModelCallOutcome
    chat_id: int
    user_id: int
    duration_seconds: float
    first_token_seconds: float | None
    """``None`` when no piece of the answer came."""
    pieces: int
    prompt_tokens: int | None
    completion_tokens: int | None
    """Token counts are ``None`` when the model did not say."""


@dataclass(frozen=True, slots=True)
class QuotaRefused:
    """A send or regenerate refused by a daily quota."""

    user_id: int
    unit: str
    """``messages`` or ``tokens``."""


@dataclass(frozen=True, slots=True)
class FileUploaded:
    user_id: int
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class LoginFailed:
    reason: LoginFailureReason
    email: str
    """As normalised; empty when what was typed is no address at all."""
    user_id: int | None
    """The account whose password was wrong; ``None`` for an unknown email."""


class Telemetry(Protocol):
    """Receives the core's events. Each method returns at once and never raises:
    a broken metrics backend must not fail a request."""

    def model_called(self, call: ModelCall) -> None:
        """A model call ended (an answer or a title)."""
        ...

    def quota_refused(self, refusal: QuotaRefused) -> None:
        """A start was refused by a user's daily quota."""
        ...

    def file_uploaded(self, upload: FileUploaded) -> None:
        """An image was stored and recorded."""
        ...

    def login_failed(self, failure: LoginFailed) -> None:
        """A sign-in was refused for a wrong email or password."""
        ...
