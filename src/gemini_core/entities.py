"""The domain's records: one frozen dataclass per table, plus the values that
create or change them.

Timestamps are timezone-aware UTC ``datetime``s; ids are integers assigned by
the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from gemini_core.errors import QuotaExceededError


class OtpPurpose(StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a purpose, not a password)


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    FAILED = "failed"
    STOPPED = "stopped"
    """Stopped by its user; holds the text written until then."""
    STREAMING = "streaming"
    """Still being written by the process that ``owner`` names."""

    @property
    def final(self) -> bool:
        return self is not MessageStatus.STREAMING


# --- users -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    username: str
    full_name: str | None
    password_hash: str
    is_active: bool
    is_verified: bool
    is_admin: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None
    last_seen_at: datetime | None
    deleted_at: datetime | None
    daily_token_quota: int | None = None
    """This user's own limit on model tokens per UTC day; ``None``: the deployment's."""
    daily_message_quota: int | None = None
    """This user's own limit on answers per UTC day; ``None``: the deployment's."""

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def can_sign_in(self) -> bool:
        """Whether this account may hold a live session."""
        return self.is_active and not self.is_deleted


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    username: str
    password_hash: str
    full_name: str | None = None
    is_active: bool = True
    is_verified: bool = False
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class UserChanges:
    """Fields to change on a user; ``None`` leaves a field as it is.

    ``full_name`` is the exception: ``clear_full_name`` sets it to NULL.
    """

    email: str | None = None
    username: str | None = None
    full_name: str | None = None
    clear_full_name: bool = False
    password_hash: str | None = None
    is_active: bool | None = None
    is_verified: bool | None = None
    is_admin: bool | None = None
    last_login_at: datetime | None = None
    deleted_at: datetime | None = None
    daily_token_quota: int | None = None
    clear_daily_token_quota: bool = False
    daily_message_quota: int | None = None
    clear_daily_message_quota: bool = False


@dataclass(frozen=True, slots=True)
class UserPage:
    items: list[User]
    total: int


# --- chats and messages ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chat:
    id: int
    user_id: int
    title: str | None
    model: str
    system_prompt: str | None
    pinned: bool
    archived: bool
    created_at: datetime
    updated_at: datetime
    message_count: int
    """Every message of every branch."""
    current_message_id: int | None = None
    """The leaf of the active branch (``None`` while the chat is empty)."""


@dataclass(frozen=True, slots=True)
class NewChat:
    user_id: int
    model: str
    title: str | None = None
    system_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ChatChanges:
    """Fields to change on a chat; ``None`` leaves a field as it is.

    ``title`` and ``system_prompt`` are cleared by the ``clear_*`` flags.
    """

    title: str | None = None
    clear_title: bool = False
    system_prompt: str | None = None
    clear_system_prompt: bool = False
    pinned: bool | None = None
    archived: bool | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ChatCursor:
    """Where a page of chats ends, in the list's order (pinned, updated_at, id)."""

    pinned: bool
    updated_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    chat_id: int
    user_id: int
    role: MessageRole
    content: str
    file_ids: tuple[int, ...]
    status: MessageStatus
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime
    parent_id: int | None = None
    """The message this one follows; ``None`` for a first message."""
    siblings: tuple[int, ...] = ()
    """The ids of the messages with the same parent, this one included, oldest first."""
    owner: int | None = None
    """The process writing this answer (``AnswerOwner.key``), until it stores the
    answer's end; ``None`` for everything else."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    chat_id: int
    user_id: int
    role: MessageRole
    content: str
    parent_id: int | None = None
    file_ids: tuple[int, ...] = ()
    status: MessageStatus = MessageStatus.COMPLETE
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    after_current_leaf: bool = False
    """Follow the chat's current leaf as it is when the message is stored (then
    ``parent_id`` is not read): what a send does unless it names a parent."""


@dataclass(frozen=True, slots=True)
class NewAnswer:
    """An answer about to be written: a ``streaming`` assistant message that
    follows ``question_id``, or ``question`` stored with it in the same step."""

    chat_id: int
    user_id: int
    model: str
    owner: int
    """The key of the process that writes it (``AnswerOwner.key``)."""
    question: NewMessage | None = None
    """A new user message, stored first; the answer follows it."""
    question_id: int | None = None
    """An existing user message of the chat (a regenerate), when ``question`` is ``None``."""
    max_running: int | None = None
    """Refuse (``TooManyAnswersError``) when the user already has this many answers
    ``streaming``, counted across every process; ``None``: no limit."""
    quota: DailyQuota | None = None
    """The day the answer counts on, and the user's limits for it; ``None``: the
    store's current UTC day, without limits."""


@dataclass(frozen=True, slots=True)
class DailyQuota:
    """The UTC ``day`` an answer starts on and counts on, and the limits it is
    checked against: answers (``messages``) and model tokens that day, ``None``
    meaning no limit. The store reserves the answer under the day's lock, asking
    ``refusal`` with what that day has used before it."""

    day: date
    resets_at: datetime
    """The next UTC midnight."""
    retry_after: int
    """Whole seconds until ``resets_at``, at least 1."""
    messages: int | None = None
    tokens: int | None = None

    def refusal(self, *, messages_used: int, tokens_used: int) -> QuotaExceededError | None:
        """Why one more answer may not start today, if it may not."""
        for unit, quota, used in (
            ("messages", self.messages, messages_used),
            ("tokens", self.tokens, tokens_used),
        ):
            if quota is not None and used >= quota:
                what = "answers" if unit == "messages" else "model tokens"
                return QuotaExceededError(
                    f"You have used your daily quota of {quota} {what}; "
                    f"it resets at {self.resets_at:%Y-%m-%d %H:%M} UTC.",
                    unit=unit,
                    quota=quota,
                    used=used,
                    resets_at=self.resets_at,
                    retry_after=self.retry_after,
                )
        return None


# --- usage -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One user's answers and their tokens on one UTC day."""

    day: date
    messages: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UserUsage:
    """One user's answers and tokens over a range of days."""

    user: User
    messages: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class UserUsagePage:
    items: list[UserUsage]
    total: int


# --- files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileUpload:
    id: int
    user_id: int
    filename: str
    original_filename: str
    content_type: str
    file_size: int
    created_at: datetime

    @property
    def download_name(self) -> str:
        """The name to suggest when the file is saved: the uploader's, with the
        extension of what its bytes are (``x.html`` holding a PNG saves as
        ``x.png``, never as a page a browser would render)."""
        _, _, extension = self.filename.rpartition(".")
        stem, dot, _ = self.original_filename.rpartition(".")
        return f"{stem if dot and stem else self.original_filename}.{extension}"


@dataclass(frozen=True, slots=True)
class NewFileUpload:
    user_id: int
    filename: str
    original_filename: str
    content_type: str
    file_size: int


# --- one-time codes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OtpVerification:
    id: int
    email: str
    purpose: OtpPurpose
    code_hash: str
    attempts: int
    expires_at: datetime
    consumed_at: datetime | None
    created_at: datetime

    def is_usable(self, now: datetime, max_attempts: int) -> bool:
        return self.consumed_at is None and now < self.expires_at and self.attempts < max_attempts


@dataclass(frozen=True, slots=True)
class NewOtpVerification:
    email: str
    purpose: OtpPurpose
    code_hash: str
    expires_at: datetime


# --- sessions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSession:
    id: int
    user_id: int
    refresh_token_hash: str
    user_agent: str | None
    ip: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class NewUserSession:
    user_id: int
    refresh_token_hash: str
    expires_at: datetime
    user_agent: str | None = None
    ip: str | None = None
