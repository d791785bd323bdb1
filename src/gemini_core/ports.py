"""Ports: what the core needs from the outside world, as ``typing.Protocol``s.

Adapters in ``adapters/`` implement them (PostgreSQL, in memory, ...). Every
method that may touch a network or a disk is ``async``. Repository methods
raise only the core's errors (``ConflictError``, ``NotFoundError``,
``UnavailableError``), never their driver's.

Methods scoped by ``user_id`` find only that user's rows, so a caller cannot
reach another user's data by guessing an id.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    DailyUsage,
    FileUpload,
    Message,
    MessageStatus,
    NewAnswer,
    NewChat,
    NewFileUpload,
    NewMessage,
    NewOtpVerification,
    NewUser,
    NewUserSession,
    OtpPurpose,
    OtpVerification,
    User,
    UserChanges,
    UserPage,
    UserSession,
    UserUsagePage,
)


class Clock(Protocol):
    """The current time. A port so tests can move time instead of sleeping.

    Synchronous on purpose: reading a clock never waits on I/O.
    """

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class UserRepository(Protocol):
    async def add(self, user: NewUser) -> User:
        """Store a new user. ``ConflictError(field="email"|"username")`` when taken."""
        ...

    async def get(self, user_id: int) -> User | None:
        """The user with this id, deleted or not."""
        ...

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email, compared case-insensitively."""
        ...

    async def update(self, user_id: int, changes: UserChanges) -> User:
        """Apply ``changes``; ``NotFoundError`` for no such user, ``ConflictError`` as in add."""
        ...

    async def update_keeping_an_admin(self, user_id: int, changes: UserChanges) -> User | None:
        """Apply ``changes`` as ``update`` does, unless afterwards no account would
        be an active admin (admin, active, not deleted); then change nothing and
        return ``None``. Decided as one step against every other such update, in
        every process, so two admins demoting each other at once cannot both win."""
        ...

    async def touch(self, user_id: int, seen_at: datetime) -> None:
        """Record that the user used the service at ``seen_at``."""
        ...

    async def search(self, query: str | None, *, offset: int, limit: int) -> UserPage:
        """Users not deleted whose email or username contains ``query``, by id."""
        ...


class ChatRepository(Protocol):
    async def add(self, chat: NewChat) -> Chat:
        """Store a new chat with no messages."""
        ...

    async def get(self, user_id: int, chat_id: int) -> Chat | None:
        """The user's chat with this id."""
        ...

    async def list(
        self,
        user_id: int,
        *,
        archived: bool,
        query: str | None,
        limit: int,
        after: ChatCursor | None,
    ) -> list[Chat]:
        """The user's chats, pinned first, then most recently updated, then by id.

        ``query`` keeps chats whose title contains it (case-insensitively);
        ``after`` starts the page right after that position.
        """
        ...

    async def update(self, user_id: int, chat_id: int, changes: ChatChanges) -> Chat | None:
        """Apply ``changes`` and bump ``updated_at``; ``None`` if not the user's chat."""
        ...

    async def select_branch(self, user_id: int, chat_id: int, message_id: int) -> Chat | None:
        """Make the branch through ``message_id`` the active one: the current leaf
        becomes the newest leaf below it (at each step, the newest child). ``None``
        (and nothing changed) if the chat is not the user's or the message not in it."""
        ...

    async def delete(self, user_id: int, chat_id: int) -> bool:
        """Delete the chat and its messages; ``False`` if not the user's chat."""
        ...


class MessageRepository(Protocol):
    async def add(self, message: NewMessage) -> Message:
        """Store a message under its parent (or after the chat's current leaf, read
        in the same step, with ``after_current_leaf``), count it on its chat, bump
        the chat's ``updated_at`` and make the message the chat's current leaf, in
        one step: concurrent adds after the leaf form a chain, never siblings.

        ``NotFoundError`` when the chat does not exist or is not the user's, or the
        parent is not a message of that chat; then nothing is stored.
        """
        ...

    async def get(self, user_id: int, chat_id: int, message_id: int) -> Message | None:
        """The message of the user's chat with this id."""
        ...

    async def branch(
        self, user_id: int, chat_id: int, *, ending_at: int, limit: int, inclusive: bool = True
    ) -> list[Message]:
        """The branch from the chat's first message down to ``ending_at`` (it
        included, unless not ``inclusive``): its last ``limit`` messages, oldest
        first. Empty for another user's chat or a message not in the chat. Costs
        ``limit`` steps up the tree however big the chat is."""
        ...

    async def search(self, user_id: int, query: str, *, limit: int) -> builtins.list[SearchHit]:
        """The user's messages matching ``query`` (words, as typed in a search box),
        best match first, at most ``limit``; nobody else's, whatever the query.
        Only the newest ``SEARCH_WINDOW`` matches are ranked, so a common word
        costs the same in a history of any length."""
        ...

    # --- answers being written ------------------------------------------------------

    async def start_answer(self, answer: NewAnswer) -> tuple[Message, Message]:
        """In one step: store ``answer.question`` (if given) as ``add`` would, then a
        ``streaming`` assistant message with empty content, ``answer.model`` and
        ``answer.owner``, following the question; the answer becomes the chat's
        current leaf and both are counted on the chat. Returns (question, answer);
        the question is read back when it already existed.

        Refusals store nothing: ``NotFoundError`` as for ``add`` (or a
        ``question_id`` that is not a user message of the chat);
        ``AnswerInProgressError`` when the chat already has a ``streaming``
        answer; ``TooManyAnswersError`` when the user has ``max_running`` of
        them; the ``QuotaExceededError`` of ``answer.quota.refusal`` given what
        the user has used on its day. All hold exactly across processes sharing
        the store.

        The answer counts on its day (``answer.quota.day``, else the store's UTC
        day) in the usage rollup (see ``UsageRepository``), in the same step.
        """
        ...

    async def save_progress(self, texts: Mapping[int, str]) -> None:
        """Set the content of each answer (id -> its text so far) that is still
        ``streaming``; any other is left alone. One round trip for all of them."""
        ...

    async def finish_answer(
        self,
        message_id: int,
        *,
        status: MessageStatus,
        content: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> Message | None:
        """Store how an answer ended and clear its ``owner``. An answer still
        ``streaming`` takes ``status``; one stopped meanwhile (``stop_answers``)
        stays ``stopped`` but takes ``content`` and the counts. ``None`` when it
        is gone (its chat deleted) or was failed meanwhile (``fail_orphaned``).
        The counts are added to the answer's day in the usage rollup, in the
        same step (once: a finished answer has no owner)."""
        ...

    async def stop_answers(self, user_id: int, chat_id: int) -> builtins.list[int]:
        """Mark the chat's ``streaming`` answers ``stopped`` (their owners still
        write their last text: see ``finish_answer``); their ids, oldest first.
        Empty when none is streaming or the chat is not the user's."""
        ...

    async def fail_orphaned(self) -> builtins.list[int]:
        """Answers whose owner process is gone (see ``AnswerOwner``): mark each
        one still ``streaming`` as ``failed`` and clear the owner of all of them.
        Each without counts takes an estimate of its completion tokens from its
        saved text (about four characters a token), added to the usage rollup.
        Returns the ids marked failed. Never touches a live process's answers."""
        ...


class UsageRepository(Protocol):
    """The per-user, per-UTC-day rollup of answers and their tokens, kept by
    ``MessageRepository.start_answer`` and ``finish_answer``; read here without
    touching the messages."""

    async def days(self, user_id: int, first: date, last: date) -> builtins.list[DailyUsage]:
        """The user's days from ``first`` to ``last`` (both included) that have
        usage, oldest first."""
        ...

    async def by_user(self, first: date, last: date, *, offset: int, limit: int) -> UserUsagePage:
        """Every user with usage from ``first`` to ``last``, summed over those days,
        most tokens first (then most answers, then lowest id): ``limit`` of them
        from ``offset``, and how many there are."""
        ...


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message found by a search, with its chat's title and a plain-text
    excerpt in which the matched words are wrapped in ``**``."""

    message: Message
    chat_title: str | None
    snippet: str


class FileUploadRepository(Protocol):
    async def add(self, upload: NewFileUpload) -> FileUpload:
        """Record a stored file. ``ConflictError(field="filename")`` if the name is taken."""
        ...

    async def add_within_quota(self, upload: NewFileUpload, *, quota: int) -> FileUpload | None:
        """Record the file only if the owner's files, it included, then total at
        most ``quota`` bytes; ``None`` (and nothing recorded) otherwise.

        Atomic per owner: of concurrent calls, no two can both pass on the same
        remaining room. Errors as in ``add``.
        """
        ...

    async def get(self, user_id: int, file_id: int) -> FileUpload | None:
        """The user's file with this id."""
        ...

    async def get_by_filename(self, filename: str) -> FileUpload | None:
        """The file stored under this generated name, whoever owns it."""
        ...

    async def list(self, user_id: int, *, limit: int, before: int | None) -> list[FileUpload]:
        """The user's files, newest first, with ids below ``before``."""
        ...

    async def delete(self, user_id: int, file_id: int) -> FileUpload | None:
        """Delete the record and return it; ``None`` if not the user's file."""
        ...

    async def total_size(self, user_id: int) -> int:
        """Bytes of all the user's files."""
        ...

    async def owned(self, user_id: int, file_ids: Sequence[int]) -> builtins.list[FileUpload]:
        """Those of ``file_ids`` that belong to the user, in the order asked."""
        ...


# Raises to refuse a new code, given when this email's recent codes were issued.
IssueGuard = Callable[[Sequence[datetime]], None]


class OtpRepository(Protocol):
    async def add(self, otp: NewOtpVerification) -> OtpVerification:
        """Store a code. Earlier unused codes for the same email and purpose are
        retired (marked consumed), not deleted, so the hourly cap still counts them."""
        ...

    async def latest(self, email: str, purpose: OtpPurpose) -> OtpVerification | None:
        """The newest code for this email and purpose, used or not."""
        ...

    async def add_if_allowed(
        self, otp: NewOtpVerification, *, since: datetime, allow: IssueGuard
    ) -> OtpVerification:
        """Store a code if ``allow`` lets it, decided as one step per email.

        ``allow`` is called with the moments every code for this email (any
        purpose, compared case-insensitively) was issued since ``since``,
        oldest first, while no other code for that email can be issued by any
        process; if it raises, nothing is stored and its error propagates.
        Otherwise the code is stored as ``add`` does.
        """
        ...

    async def record_attempt(self, otp_id: int) -> int:
        """Count one try, atomically, and return the new number of tries.

        Counted before the code is compared, so concurrent guesses cannot get
        more than the allowed number of comparisons between them.
        """
        ...

    async def consume(self, otp_id: int, at: datetime) -> bool:
        """Mark the code used; ``False`` if it already was (so only one caller wins)."""
        ...

    async def delete(self, otp_id: int) -> None:
        """Forget a code (for example one whose mail could not be sent)."""
        ...

    async def purge_expired(self, before: datetime) -> int:
        """Delete codes that expired before ``before``; return how many went."""
        ...


class SessionRepository(Protocol):
    async def add(self, session: NewUserSession) -> UserSession:
        """Open a session."""
        ...

    async def get(self, session_id: int) -> UserSession | None:
        """The session with this id, revoked or not."""
        ...

    async def get_with_user(self, session_id: int) -> tuple[UserSession, User] | None:
        """The session and its user, read together (the check on every request)."""
        ...

    async def list_live(self, user_id: int, now: datetime) -> list[UserSession]:
        """The user's sessions that are neither revoked nor expired, newest first."""
        ...

    async def rotate(
        self, session_id: int, *, expected_hash: str, new_hash: str, now: datetime
    ) -> bool:
        """Swap the refresh token hash if it is still ``expected_hash`` on a live session.

        ``False`` when another request already rotated it, or the session is dead.
        """
        ...

    async def touch(self, session_id: int, now: datetime) -> None:
        """Record a use of the session."""
        ...

    async def revoke(self, session_id: int, now: datetime) -> bool:
        """Revoke one session; ``False`` if it was not live."""
        ...

    async def purge_ended(self, before: datetime) -> int:
        """Delete sessions that expired or were revoked before ``before``; return
        how many went. Live sessions are never touched."""
        ...

    async def revoke_all(self, user_id: int, now: datetime, *, except_id: int | None = None) -> int:
        """Revoke every live session of the user but ``except_id``; return how many."""
        ...


@dataclass(frozen=True, slots=True)
class Counts:
    """Totals over accounts that are not deleted, and their chats and messages."""

    total_users: int
    total_chats: int
    total_messages: int
    active_users: int
    new_users: int


class StatsRepository(Protocol):
    async def counts(self, *, active_since: datetime, created_since: datetime) -> Counts:
        """``active_users`` signed in or used the API at or after ``active_since``;
        ``new_users`` were created at or after ``created_since``."""
        ...


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    """What a database health check saw."""

    healthy: bool
    response_time_ms: float
    pool: dict[str, int]


class DatabaseProbe(Protocol):
    async def check(self) -> DatabaseStatus:
        """Run a trivial query; never raises, reports ``healthy=False`` instead."""
        ...


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer to one request against a limit."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    """Seconds until the window that counted this request ends."""
    retry_after: int
    """Seconds to wait before trying again; 0 when allowed."""


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    total_identifiers: int
    total_requests: int


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        """Count one request for ``key`` and say whether it is within ``limit``."""
        ...

    async def stats(self) -> RateLimiterStats:
        """How many keys are being counted, and how many requests they hold."""
        ...


@dataclass(frozen=True, slots=True)
class CacheStats:
    total_keys: int
    expired_keys: int


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The live value under ``key``, or ``None``."""
        ...

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds``."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        ...

    async def stats(self) -> CacheStats:
        """How many keys are held, and how many of them have expired but not gone yet."""
        ...


# --- accounts ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One message to one recipient, in plain text and HTML."""

    to: str
    subject: str
    text: str
    html: str


class ExclusiveLock(Protocol):
    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to take the lock called ``name`` for the duration of the context,
        across every process sharing the store; never waits. Yields whether it
        was taken: ``False`` means another holder has it right now."""
        ...


class Mailer(Protocol):
    async def send(self, mail: OutgoingMail) -> None:
        """Hand the mail to the mail server.

        ``UnavailableError`` when the server refuses it or cannot be reached in time;
        ``InvalidInputError`` (field ``email``) when the address is one this server
        cannot carry, such as a non-ASCII mailbox on a server without SMTPUTF8.
        """
        ...


class PasswordHasher(Protocol):
    """Slow, salted password hashing. Implementations keep the CPU work off the
    event loop, so a burst of logins never stalls other requests."""

    async def hash(self, password: str) -> str:
        """A new salted hash of ``password`` in a self-describing format."""
        ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; ``False`` (never an error) for a malformed hash."""
        ...

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        ...


class TokenType(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a signed token says. ``jti`` is unique per token."""

    type: TokenType
    user_id: int
    session_id: int
    jti: str
    issued_at: datetime
    expires_at: datetime


class TokenCodec(Protocol):
    """Signs and checks bearer tokens (JWT)."""

    def encode(self, claims: TokenClaims) -> str:
        """The signed token."""
        ...

    def decode(self, token: str, *, expected_type: TokenType, now: datetime) -> TokenClaims:
        """The claims of a genuine, unexpired token of ``expected_type``.

        ``AuthenticationError`` for anything else: a bad signature or algorithm,
        another issuer or audience, a missing claim, expiry, or the other type.
        """
        ...


class AnswerOwner(Protocol):
    """This process's claim on the answers it writes.

    Every process holds one ``key`` for its lifetime, recorded on each answer it
    writes (``Message.owner``); the store can tell a key whose process is gone
    (crashed, killed, its host lost) from a live one, so ``fail_orphaned``
    never touches a live process's answers.
    """

    @property
    def key(self) -> int:
        """A positive integer, unique among live processes; valid once ``start`` returned."""
        ...

    async def start(self) -> None:
        """Take the key; held until ``aclose`` or the process's end."""
        ...

    async def aclose(self) -> None: ...


class AnswerSignals(Protocol):
    """Short messages between the processes of one deployment (stop an answer,
    follow one, its text): every message sent reaches every process's receiver,
    the sender's own included, in the order each process sent them.

    A message is at most ``MAX_SIGNAL_BYTES`` of UTF-8. Delivery is best effort
    (a broken connection loses what was sent meanwhile); the core never relies
    on a signal alone for what the store can tell.
    """

    async def start(self, receive: Callable[[str], None]) -> None:
        """Deliver from now on every message sent, to ``receive`` (called in the
        event loop, one message at a time). When this returns the receiver is
        listening: whatever is sent afterwards, by any process, reaches it."""
        ...

    async def send(self, message: str) -> None:
        """Send to every process. ``UnavailableError`` when it cannot be sent."""
        ...

    async def aclose(self) -> None: ...


SEARCH_WINDOW = 1000
"""How many of a user's newest matches ``MessageRepository.search`` ranks."""

MAX_SIGNAL_BYTES = 7000
"""PostgreSQL's NOTIFY takes up to 8000 bytes; the rest is headroom."""
