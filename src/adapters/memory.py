"""The repository ports in memory: for unit tests, and for running the web
layer without a database.

They behave like the PostgreSQL adapters in everything a caller can see
(ordering, case-insensitive emails and usernames, conflicts and the field
they name, scoping by user, which timestamps change), and the contract suite
in ``tests/integration/test_repositories.py`` runs against both to keep it so.

All the repositories of one ``InMemoryStore`` share its tables, as the
PostgreSQL ones share a database: adding a message counts it on its chat,
deleting a chat deletes its messages. Every method body is synchronous (no
``await`` inside), so on one event loop each call is atomic, as each
PostgreSQL statement is.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    FileUpload,
    Message,
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
)
from gemini_core.errors import ConflictError, InvalidInputError, NotFoundError
from gemini_core.ports import Clock, Counts, DatabaseStatus, IssueGuard, SearchHit

__all__ = [
    "InMemoryChatRepository",
    "InMemoryDatabaseProbe",
    "InMemoryFileUploadRepository",
    "InMemoryMessageRepository",
    "InMemoryOtpRepository",
    "InMemoryRepositories",
    "InMemorySessionRepository",
    "InMemoryStatsRepository",
    "InMemoryStore",
    "InMemoryUserRepository",
]


@dataclass
class InMemoryStore:
    """The tables, keyed by id, and one id sequence per table (ids start at 1)."""

    users: dict[int, User] = field(default_factory=dict)
    chats: dict[int, Chat] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    files: dict[int, FileUpload] = field(default_factory=dict)
    otps: dict[int, OtpVerification] = field(default_factory=dict)
    sessions: dict[int, UserSession] = field(default_factory=dict)
    _sequences: dict[str, Iterator[int]] = field(default_factory=dict)

    def next_id(self, table: str) -> int:
        return next(self._sequences.setdefault(table, itertools.count(1)))

    def require_user(self, user_id: int) -> None:
        """What the foreign keys to ``users`` enforce."""
        if user_id not in self.users:
            raise NotFoundError("A record this refers to does not exist.")


def _is_active_admin(user: User) -> bool:
    return user.is_admin and user.is_active and user.deleted_at is None


class _Repository:
    """Holds the shared store (a private one when none is given) and the clock."""

    def __init__(self, store: InMemoryStore | None = None, *, clock: Clock) -> None:
        self._store = InMemoryStore() if store is None else store
        self._clock = clock

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _check_page(*, limit: int, offset: int = 0) -> None:
    # PostgreSQL refuses a negative LIMIT or OFFSET; so do we.
    if limit < 0 or offset < 0:
        raise InvalidInputError("A value is out of the allowed range.")


def _contains(haystack: str | None, needle: str) -> bool:
    return haystack is not None and needle.lower() in haystack.lower()


# --- users -------------------------------------------------------------------


class InMemoryUserRepository(_Repository):
    def _check_unique(self, email: str, username: str, *, except_id: int | None) -> None:
        # Email first, as PostgreSQL checks users_email_key before the username's.
        others = [u for u in self._store.users.values() if u.id != except_id]
        if any(u.email.lower() == email.lower() for u in others):
            raise ConflictError("That email is already taken.", field="email")
        if any(u.username.lower() == username.lower() for u in others):
            raise ConflictError("That username is already taken.", field="username")

    async def add(self, user: NewUser) -> User:
        self._check_unique(user.email, user.username, except_id=None)
        now = self._now()
        stored = User(
            id=self._store.next_id("users"),
            email=user.email,
            username=user.username,
            full_name=user.full_name,
            password_hash=user.password_hash,
            is_active=user.is_active,
            is_verified=user.is_verified,
            is_admin=user.is_admin,
            created_at=now,
            updated_at=now,
            last_login_at=None,
            last_seen_at=None,
            deleted_at=None,
        )
        self._store.users[stored.id] = stored
        return stored

    async def get(self, user_id: int) -> User | None:
        return self._store.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        wanted = email.lower()
        return next((u for u in self._store.users.values() if u.email.lower() == wanted), None)

    async def update(self, user_id: int, changes: UserChanges) -> User:
        user = self._store.users.get(user_id)
        if user is None:
            raise NotFoundError("No such user.")
        email = user.email if changes.email is None else changes.email
        username = user.username if changes.username is None else changes.username
        self._check_unique(email, username, except_id=user_id)
        full_name = user.full_name if changes.full_name is None else changes.full_name
        updated = replace(
            user,
            email=email,
            username=username,
            full_name=None if changes.clear_full_name else full_name,
            password_hash=(
                user.password_hash if changes.password_hash is None else changes.password_hash
            ),
            is_active=user.is_active if changes.is_active is None else changes.is_active,
            is_verified=user.is_verified if changes.is_verified is None else changes.is_verified,
            is_admin=user.is_admin if changes.is_admin is None else changes.is_admin,
            last_login_at=_utc_or_none(changes.last_login_at or user.last_login_at),
            deleted_at=_utc_or_none(changes.deleted_at or user.deleted_at),
            updated_at=self._now(),
        )
        self._store.users[user_id] = updated
        return updated

    async def update_keeping_an_admin(self, user_id: int, changes: UserChanges) -> User | None:
        # No await between the change, the check and the undo: one step.
        before = self._store.users.get(user_id)
        updated = await self.update(user_id, changes)
        if not any(_is_active_admin(user) for user in self._store.users.values()):
            assert before is not None
            self._store.users[user_id] = before
            return None
        return updated

    async def touch(self, user_id: int, seen_at: datetime) -> None:
        user = self._store.users.get(user_id)
        if user is None:
            return
        seen = _utc(seen_at)
        if user.last_seen_at is None or seen > user.last_seen_at:
            self._store.users[user_id] = replace(user, last_seen_at=seen)

    async def search(self, query: str | None, *, offset: int, limit: int) -> UserPage:
        _check_page(limit=limit, offset=offset)
        matched = [
            user
            for user in sorted(self._store.users.values(), key=lambda u: u.id)
            if user.deleted_at is None
            and (query is None or _contains(user.email, query) or _contains(user.username, query))
        ]
        return UserPage(items=matched[offset : offset + limit], total=len(matched))


# --- chats and messages ------------------------------------------------------


def _chat_order(chat: Chat) -> tuple[bool, datetime, int]:
    return (chat.pinned, chat.updated_at, chat.id)


class InMemoryChatRepository(_Repository):
    async def add(self, chat: NewChat) -> Chat:
        self._store.require_user(chat.user_id)
        now = self._now()
        stored = Chat(
            id=self._store.next_id("chats"),
            user_id=chat.user_id,
            title=chat.title,
            model=chat.model,
            system_prompt=chat.system_prompt,
            pinned=False,
            archived=False,
            created_at=now,
            updated_at=now,
            message_count=0,
        )
        self._store.chats[stored.id] = stored
        return stored

    async def get(self, user_id: int, chat_id: int) -> Chat | None:
        chat = self._store.chats.get(chat_id)
        return chat if chat is not None and chat.user_id == user_id else None

    async def list(
        self,
        user_id: int,
        *,
        archived: bool,
        query: str | None,
        limit: int,
        after: ChatCursor | None,
    ) -> builtins.list[Chat]:
        _check_page(limit=limit)
        cursor = None if after is None else (after.pinned, _utc(after.updated_at), after.id)
        chats = sorted(
            (
                chat
                for chat in self._store.chats.values()
                if chat.user_id == user_id
                and chat.archived == archived
                and (query is None or _contains(chat.title, query))
                and (cursor is None or _chat_order(chat) < cursor)
            ),
            key=_chat_order,
            reverse=True,
        )
        return chats[:limit]

    async def update(self, user_id: int, chat_id: int, changes: ChatChanges) -> Chat | None:
        chat = await self.get(user_id, chat_id)
        if chat is None:
            return None
        title = chat.title if changes.title is None else changes.title
        prompt = chat.system_prompt if changes.system_prompt is None else changes.system_prompt
        updated = replace(
            chat,
            title=None if changes.clear_title else title,
            system_prompt=None if changes.clear_system_prompt else prompt,
            pinned=chat.pinned if changes.pinned is None else changes.pinned,
            archived=chat.archived if changes.archived is None else changes.archived,
            model=chat.model if changes.model is None else changes.model,
            updated_at=self._now(),
        )
        self._store.chats[chat_id] = updated
        return updated

    async def delete(self, user_id: int, chat_id: int) -> bool:
        if await self.get(user_id, chat_id) is None:
            return False
        del self._store.chats[chat_id]
        for message_id in [m.id for m in self._store.messages.values() if m.chat_id == chat_id]:
            del self._store.messages[message_id]
        return True


class InMemoryMessageRepository(_Repository):
    async def add(self, message: NewMessage) -> Message:
        chat = self._store.chats.get(message.chat_id)
        if chat is None or chat.user_id != message.user_id:
            raise NotFoundError("No such chat.")
        if any(n is not None and n < 0 for n in (message.prompt_tokens, message.completion_tokens)):
            raise InvalidInputError("A value is out of the allowed range.")
        now = self._now()
        stored = Message(
            id=self._store.next_id("messages"),
            chat_id=message.chat_id,
            user_id=message.user_id,
            role=message.role,
            content=message.content,
            file_ids=tuple(message.file_ids),
            status=message.status,
            model=message.model,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            created_at=now,
        )
        self._store.messages[stored.id] = stored
        self._store.chats[chat.id] = replace(
            chat, message_count=chat.message_count + 1, updated_at=now
        )
        return stored

    async def list(
        self, user_id: int, chat_id: int, *, limit: int, before: int | None
    ) -> builtins.list[Message]:
        _check_page(limit=limit)
        older = sorted(
            (
                m
                for m in self._store.messages.values()
                if m.chat_id == chat_id
                and m.user_id == user_id
                and (before is None or m.id < before)
            ),
            key=lambda m: m.id,
        )
        return older[-limit:] if limit else []

    async def search(self, user_id: int, query: str, *, limit: int) -> builtins.list[SearchHit]:
        """Every word of ``query`` must appear in the message, in any case; more
        occurrences rank higher (no stemming, unlike PostgreSQL's English search)."""
        _check_page(limit=limit)
        wanted = set(_words(query))
        scored = []
        for message in self._store.messages.values():
            words = _words(message.content)
            if message.user_id == user_id and wanted and wanted <= set(words):
                scored.append((sum(word in wanted for word in words), message))
        scored.sort(key=lambda hit: (hit[0], hit[1].id), reverse=True)
        return [
            SearchHit(
                message=message,
                chat_title=self._store.chats[message.chat_id].title,
                snippet=_snippet(message.content, wanted),
            )
            for _, message in scored[:limit]
        ]


def _words(text: str) -> builtins.list[str]:
    return "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()


def _snippet(text: str, wanted: set[str], width: int = 30) -> str:
    """Up to ``width`` words around the first match, matches wrapped in ``**``."""
    words = text.split()
    first = next((n for n, word in enumerate(words) if set(_words(word)) & wanted), 0)
    start = max(0, first - width // 3)
    shown = [
        f"**{word}**" if set(_words(word)) & wanted else word
        for word in words[start : start + width]
    ]
    return ("… " if start else "") + " ".join(shown) + (" …" if start + width < len(words) else "")


# --- files -------------------------------------------------------------------


class InMemoryFileUploadRepository(_Repository):
    async def add(self, upload: NewFileUpload) -> FileUpload:
        self._store.require_user(upload.user_id)
        if upload.file_size < 0:
            raise InvalidInputError("A value is out of the allowed range.")
        if any(f.filename == upload.filename for f in self._store.files.values()):
            raise ConflictError("That filename is already taken.", field="filename")
        stored = FileUpload(
            id=self._store.next_id("files"),
            user_id=upload.user_id,
            filename=upload.filename,
            original_filename=upload.original_filename,
            content_type=upload.content_type,
            file_size=upload.file_size,
            created_at=self._now(),
        )
        self._store.files[stored.id] = stored
        return stored

    async def add_within_quota(self, upload: NewFileUpload, *, quota: int) -> FileUpload | None:
        self._store.require_user(upload.user_id)
        used = sum(f.file_size for f in self._store.files.values() if f.user_id == upload.user_id)
        if used + upload.file_size > quota:
            return None
        # ``add`` never awaits, so the check and the insert are one step on the loop.
        return await self.add(upload)

    async def get(self, user_id: int, file_id: int) -> FileUpload | None:
        upload = self._store.files.get(file_id)
        return upload if upload is not None and upload.user_id == user_id else None

    async def get_by_filename(self, filename: str) -> FileUpload | None:
        return next((f for f in self._store.files.values() if f.filename == filename), None)

    async def list(
        self, user_id: int, *, limit: int, before: int | None
    ) -> builtins.list[FileUpload]:
        _check_page(limit=limit)
        mine = sorted(
            (
                f
                for f in self._store.files.values()
                if f.user_id == user_id and (before is None or f.id < before)
            ),
            key=lambda f: f.id,
            reverse=True,
        )
        return mine[:limit]

    async def delete(self, user_id: int, file_id: int) -> FileUpload | None:
        upload = await self.get(user_id, file_id)
        if upload is not None:
            del self._store.files[file_id]
        return upload

    async def total_size(self, user_id: int) -> int:
        return sum(f.file_size for f in self._store.files.values() if f.user_id == user_id)

    async def owned(self, user_id: int, file_ids: Sequence[int]) -> builtins.list[FileUpload]:
        found = (self._store.files.get(file_id) for file_id in file_ids)
        return [f for f in found if f is not None and f.user_id == user_id]


# --- one-time codes ----------------------------------------------------------


class InMemoryOtpRepository(_Repository):
    def _for(self, email: str) -> Iterator[OtpVerification]:
        wanted = email.lower()
        return (otp for otp in self._store.otps.values() if otp.email.lower() == wanted)

    async def add(self, otp: NewOtpVerification) -> OtpVerification:
        now = self._now()
        # Earlier unused codes are retired (marked consumed), not deleted: the
        # hourly cap counts every code issued.
        for earlier in builtins.list(self._for(otp.email)):
            if earlier.purpose == otp.purpose and earlier.consumed_at is None:
                self._store.otps[earlier.id] = replace(earlier, consumed_at=now)
        stored = OtpVerification(
            id=self._store.next_id("otps"),
            email=otp.email,
            purpose=otp.purpose,
            code_hash=otp.code_hash,
            attempts=0,
            expires_at=_utc(otp.expires_at),
            consumed_at=None,
            created_at=now,
        )
        self._store.otps[stored.id] = stored
        return stored

    async def latest(self, email: str, purpose: OtpPurpose) -> OtpVerification | None:
        codes = [otp for otp in self._for(email) if otp.purpose == purpose]
        return max(codes, key=lambda otp: otp.id, default=None)

    async def add_if_allowed(
        self, otp: NewOtpVerification, *, since: datetime, allow: IssueGuard
    ) -> OtpVerification:
        # No await between the check and the store: one step on the event loop.
        allow(sorted(code.created_at for code in self._for(otp.email) if code.created_at >= since))
        return await self.add(otp)

    async def record_attempt(self, otp_id: int) -> int:
        otp = self._store.otps.get(otp_id)
        if otp is None:
            raise NotFoundError("No such code.")
        self._store.otps[otp_id] = replace(otp, attempts=otp.attempts + 1)
        return otp.attempts + 1

    async def consume(self, otp_id: int, at: datetime) -> bool:
        otp = self._store.otps.get(otp_id)
        if otp is None or otp.consumed_at is not None:
            return False
        self._store.otps[otp_id] = replace(otp, consumed_at=_utc(at))
        return True

    async def delete(self, otp_id: int) -> None:
        self._store.otps.pop(otp_id, None)

    async def purge_expired(self, before: datetime) -> int:
        expired = [otp.id for otp in self._store.otps.values() if otp.expires_at < before]
        for otp_id in expired:
            del self._store.otps[otp_id]
        return len(expired)


# --- sessions ----------------------------------------------------------------


class InMemorySessionRepository(_Repository):
    def _live(self, session_id: int, now: datetime) -> UserSession | None:
        session = self._store.sessions.get(session_id)
        return session if session is not None and session.is_live(now) else None

    async def add(self, session: NewUserSession) -> UserSession:
        self._store.require_user(session.user_id)
        now = self._now()
        stored = UserSession(
            id=self._store.next_id("sessions"),
            user_id=session.user_id,
            refresh_token_hash=session.refresh_token_hash,
            user_agent=session.user_agent,
            ip=session.ip,
            created_at=now,
            last_used_at=now,
            expires_at=_utc(session.expires_at),
            revoked_at=None,
        )
        self._store.sessions[stored.id] = stored
        return stored

    async def get(self, session_id: int) -> UserSession | None:
        return self._store.sessions.get(session_id)

    async def get_with_user(self, session_id: int) -> tuple[UserSession, User] | None:
        session = self._store.sessions.get(session_id)
        if session is None:
            return None
        return session, self._store.users[session.user_id]

    async def list_live(self, user_id: int, now: datetime) -> builtins.list[UserSession]:
        live = [s for s in self._store.sessions.values() if s.user_id == user_id and s.is_live(now)]
        return sorted(live, key=lambda s: s.id, reverse=True)

    async def rotate(
        self, session_id: int, *, expected_hash: str, new_hash: str, now: datetime
    ) -> bool:
        session = self._live(session_id, now)
        if session is None or session.refresh_token_hash != expected_hash:
            return False
        self._store.sessions[session_id] = replace(
            session, refresh_token_hash=new_hash, last_used_at=_utc(now)
        )
        return True

    async def touch(self, session_id: int, now: datetime) -> None:
        session = self._store.sessions.get(session_id)
        if session is not None and now > session.last_used_at:
            self._store.sessions[session_id] = replace(session, last_used_at=_utc(now))

    async def revoke(self, session_id: int, now: datetime) -> bool:
        session = self._live(session_id, now)
        if session is None:
            return False
        self._store.sessions[session_id] = replace(session, revoked_at=_utc(now))
        return True

    async def revoke_all(self, user_id: int, now: datetime, *, except_id: int | None = None) -> int:
        doomed = [
            s
            for s in self._store.sessions.values()
            if s.user_id == user_id and s.id != except_id and s.is_live(now)
        ]
        for session in doomed:
            self._store.sessions[session.id] = replace(session, revoked_at=_utc(now))
        return len(doomed)


# --- all of them -------------------------------------------------------------


class InMemoryRepositories:
    """Every repository over one shared store, as the composition root wants them."""

    def __init__(self, *, clock: Clock, store: InMemoryStore | None = None) -> None:
        self.store = InMemoryStore() if store is None else store
        self.users = InMemoryUserRepository(self.store, clock=clock)
        self.chats = InMemoryChatRepository(self.store, clock=clock)
        self.messages = InMemoryMessageRepository(self.store, clock=clock)
        self.files = InMemoryFileUploadRepository(self.store, clock=clock)
        self.otps = InMemoryOtpRepository(self.store, clock=clock)
        self.sessions = InMemorySessionRepository(self.store, clock=clock)
        self.stats = InMemoryStatsRepository(self.store, clock=clock)


class InMemoryDatabaseProbe:
    """The ``DatabaseProbe`` port with no database: healthy until told otherwise."""

    def __init__(self, *, healthy: bool = True) -> None:
        self.healthy = healthy

    async def check(self) -> DatabaseStatus:
        return DatabaseStatus(healthy=self.healthy, response_time_ms=0.0, pool={})


class InMemoryStatsRepository(_Repository):
    """The ``StatsRepository`` port over the shared store."""

    async def counts(self, *, active_since: datetime, created_since: datetime) -> Counts:
        live = {u.id: u for u in self._store.users.values() if u.deleted_at is None}
        chats = [c for c in self._store.chats.values() if c.user_id in live]

        def active(user: User) -> bool:
            moments = [m for m in (user.last_login_at, user.last_seen_at) if m is not None]
            return bool(moments) and max(moments) >= active_since

        return Counts(
            total_users=len(live),
            total_chats=len(chats),
            total_messages=sum(c.message_count for c in chats),
            active_users=sum(1 for u in live.values() if active(u)),
            new_users=sum(1 for u in live.values() if u.created_at >= created_since),
        )
