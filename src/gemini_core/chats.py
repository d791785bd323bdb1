"""Chats: conversations with a model, their messages, and search over them.

Every method takes the caller's user id and finds only that user's chats: a
chat of someone else's is ``NotFoundError``, exactly like one that does not
exist. Sending a message stores it first, so it survives whatever the model
does; the answer then streams through an ``Exchange`` (see ``answers``).

Limits (``InvalidInputError`` naming the field beyond them): titles up to
200 characters, system prompts up to 8000, messages 1 to 32000 (not blank),
at most 10 files per message, page sizes 1 to 100.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gemini_core.answers import (
    SHUTTING_DOWN,
    AnswerDelta,
    AnswerDone,
    Answerer,
    AnswerSettings,
    Claim,
    Exchange,
    ImageSource,
)
from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    FileUpload,
    Message,
    MessageRole,
    NewChat,
    NewMessage,
)
from gemini_core.errors import (
    AnswerInProgressError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from gemini_core.llm import LlmClient
from gemini_core.pagination import (
    check_page_size,
    decode_chat_cursor,
    encode_chat_cursor,
    fetch_page,
)
from gemini_core.ports import ChatRepository, FileUploadRepository, MessageRepository, SearchHit
from gemini_core.storage import FileStorage
from gemini_core.tasks import TaskKeeper
from gemini_core.telemetry import Telemetry

__all__ = [
    "CURRENT_LEAF",
    "MAX_CONTENT_LENGTH",
    "MAX_FILES_PER_MESSAGE",
    "MAX_SEARCH_LENGTH",
    "MAX_SYSTEM_PROMPT_LENGTH",
    "MAX_TITLE_LENGTH",
    "NEWEST_MESSAGES_SHOWN",
    "AnswerDelta",
    "AnswerDone",
    "ChatPage",
    "ChatRules",
    "ChatService",
    "Exchange",
    "ImageSource",
    "MessagePage",
    "StoredImages",
]

MAX_TITLE_LENGTH = 200
MAX_SYSTEM_PROMPT_LENGTH = 8000
MAX_CONTENT_LENGTH = 32000
MAX_FILES_PER_MESSAGE = 10
MAX_SEARCH_LENGTH = 500
NEWEST_MESSAGES_SHOWN = 100
NO_SUCH_CHAT = "No such chat."
NO_SUCH_MESSAGE = "No such message in this chat."
NO_SUCH_CHAT_OR_MESSAGE = "No such chat or message."  # the repositories' words


class CurrentLeaf:
    """The chat's current leaf, as a send's parent: the default."""


CURRENT_LEAF = CurrentLeaf()


@dataclass(frozen=True, slots=True)
class ChatRules:
    models: tuple[str, ...]
    """The models a chat may use; the first is the default for new chats."""
    max_history_messages: int = 50
    """Messages sent to the model per call, the new one included."""
    timeout_seconds: float = 60.0
    model_titles: bool = True
    """Ask the default model for titles; else a chat is titled with its first words."""
    shutdown_grace_seconds: float = 10.0
    """What background work (stores, titles) gets at ``aclose`` before it is cancelled."""

    @property
    def default_model(self) -> str:
        return self.models[0]


@dataclass(frozen=True, slots=True)
class ChatPage:
    items: list[Chat]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    items: list[Message]
    """Oldest first."""
    next_cursor: str | None
    """The id of the page's oldest message when older ones exist: the next ``before``."""


class StoredImages:
    """``ImageSource`` over the ``FileStorage`` port: an upload's bytes live under
    its generated file name."""

    def __init__(self, storage: FileStorage, *, max_bytes: int) -> None:
        self._storage = storage
        self._max_bytes = max_bytes

    async def read(self, upload: FileUpload) -> bytes:
        chunks: list[bytes] = []
        size = 0
        stream: AsyncIterator[bytes] = await self._storage.open(upload.filename)
        async for chunk in stream:
            size += len(chunk)
            if size > self._max_bytes:  # never larger than an upload may be
                raise NotFoundError("That file's stored bytes are not what was uploaded.")
            chunks.append(chunk)
        return b"".join(chunks)


class ChatService:
    def __init__(
        self,
        *,
        chats: ChatRepository,
        messages: MessageRepository,
        files: FileUploadRepository,
        images: ImageSource,
        llm: LlmClient,
        rules: ChatRules,
        telemetry: Telemetry,
    ) -> None:
        if not rules.models:
            raise ValueError("at least one model must be allowed")
        self._chats = chats
        self._messages = messages
        self._files = files
        self._llm = llm
        self._rules = rules
        self._tasks = TaskKeeper()
        self._answerer = Answerer(
            chats=chats,
            messages=messages,
            files=files,
            images=images,
            llm=llm,
            settings=AnswerSettings(
                max_history_messages=rules.max_history_messages,
                timeout_seconds=rules.timeout_seconds,
                model_titles=rules.model_titles,
                title_model=rules.default_model,
            ),
            tasks=self._tasks,
            telemetry=telemetry,
        )

    @property
    def models(self) -> tuple[str, ...]:
        return self._rules.models

    # --- chats ----------------------------------------------------------------------

    async def create_chat(
        self,
        user_id: int,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Chat:
        return await self._chats.add(
            NewChat(
                user_id=user_id,
                model=self._check_model(model) if model is not None else self._rules.default_model,
                title=_clean_title(title),
                system_prompt=_check_system_prompt(system_prompt),
            )
        )

    async def list_chats(
        self,
        user_id: int,
        *,
        archived: bool = False,
        query: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> ChatPage:
        """Pinned first, then the most recently updated; ``query`` matches titles."""
        check_page_size(limit)
        if query is not None and len(query) > MAX_TITLE_LENGTH:
            raise InvalidInputError(f"At most {MAX_TITLE_LENGTH} characters.", field="q")
        query = (_storable(query, "q") or "").strip() or None
        after = decode_chat_cursor(cursor) if cursor else None
        items, next_cursor = await fetch_page(
            lambda n: self._chats.list(
                user_id, archived=archived, query=query, limit=n, after=after
            ),
            limit,
            lambda last: encode_chat_cursor(
                ChatCursor(pinned=last.pinned, updated_at=last.updated_at, id=last.id)
            ),
        )
        return ChatPage(items=items, next_cursor=next_cursor)

    async def get_chat(self, user_id: int, chat_id: int) -> tuple[Chat, list[Message]]:
        """The chat and the newest messages of its active branch, oldest first."""
        chat = await self._require_chat(user_id, chat_id)
        return chat, await self._active_branch(chat, limit=NEWEST_MESSAGES_SHOWN)

    async def select_branch(
        self, user_id: int, chat_id: int, message_id: int
    ) -> tuple[Chat, list[Message]]:
        """Make the branch through ``message_id`` the active one (down to its newest
        leaf) and return the chat as ``get_chat`` does. ``NotFoundError`` for a chat
        that is not the caller's or a message not in it."""
        chat = await self._chats.select_branch(user_id, chat_id, message_id)
        if chat is None:
            raise NotFoundError(NO_SUCH_MESSAGE)
        return chat, await self._active_branch(chat, limit=NEWEST_MESSAGES_SHOWN)

    async def update_chat(self, user_id: int, chat_id: int, changes: ChatChanges) -> Chat:
        """Apply ``changes``; a blank title or system prompt clears it."""
        title = _clean_title(changes.title)
        prompt = _check_system_prompt(changes.system_prompt)
        checked = ChatChanges(
            title=title,
            clear_title=changes.clear_title or (changes.title is not None and title is None),
            system_prompt=prompt,
            clear_system_prompt=changes.clear_system_prompt
            or (changes.system_prompt is not None and prompt is None),
            pinned=changes.pinned,
            archived=changes.archived,
            model=None if changes.model is None else self._check_model(changes.model),
        )
        if checked == ChatChanges():  # nothing to change: keep updated_at as it is
            return await self._require_chat(user_id, chat_id)
        chat = await self._chats.update(user_id, chat_id, checked)
        if chat is None:
            raise NotFoundError(NO_SUCH_CHAT)
        return chat

    async def delete_chat(self, user_id: int, chat_id: int) -> None:
        """Delete the chat and its messages."""
        if not await self._chats.delete(user_id, chat_id):
            raise NotFoundError(NO_SUCH_CHAT)

    # --- messages -------------------------------------------------------------------

    async def list_messages(
        self, user_id: int, chat_id: int, *, limit: int = 50, before: int | None = None
    ) -> MessagePage:
        """The active branch's newest ``limit`` messages above ``before`` (from its leaf
        when ``None``), oldest first."""
        check_page_size(limit)
        chat = await self._require_chat(user_id, chat_id)
        ending_at = before if before is not None else chat.current_message_id
        if ending_at is None:
            return MessagePage(items=[], next_cursor=None)
        items, next_cursor = await fetch_page(
            lambda n: self._messages.branch(
                user_id, chat_id, ending_at=ending_at, limit=n, inclusive=before is None
            ),
            limit,
            lambda oldest: str(oldest.id),
            backwards=True,
        )
        return MessagePage(items=items, next_cursor=next_cursor)

    async def send_message(
        self,
        user_id: int,
        chat_id: int,
        content: str,
        file_ids: Sequence[int] = (),
        *,
        parent_id: int | CurrentLeaf | None = CURRENT_LEAF,
        model: str | None = None,
    ) -> Exchange:
        """Store the user's message and return it with its answer on the way.

        The message follows the chat's current leaf, or ``parent_id`` when given
        (``None``: a new first message); following an earlier message is how a
        question is edited, and starts a branch. ``model`` answers this once with
        another of the allowed models. The new message, then its answer, become
        the chat's current leaf.

        ``NotFoundError`` for a chat, parent or file that is not the caller's;
        ``ConflictError`` while an answer of the chat is being written;
        ``InvalidInputError`` for an unknown model: then nothing is stored. The
        model is not called until the exchange's events are read.
        ``UnavailableError`` once answers are abandoned.
        """
        if self._answerer.abandoned:  # stored now, it could only get a failed answer
            raise UnavailableError(SHUTTING_DOWN)
        content = _check_content(content)
        wanted = _check_file_ids(file_ids)
        chosen = None if model is None else self._check_model(model)
        chat = await self._require_chat(user_id, chat_id)
        claim = self._claim(chat)
        # The current leaf is read by the store, as it is when the message goes in.
        follows_leaf = isinstance(parent_id, CurrentLeaf)
        parent = None if isinstance(parent_id, CurrentLeaf) else parent_id
        try:
            if wanted and len(await self._files.owned(user_id, wanted)) != len(wanted):
                raise NotFoundError("No such file.")
            question = await self._messages.add(
                NewMessage(
                    chat_id=chat.id,
                    user_id=user_id,
                    role=MessageRole.USER,
                    content=content,
                    file_ids=wanted,
                    parent_id=parent,
                    after_current_leaf=follows_leaf,
                )
            )
        except BaseException as exc:
            claim.release()
            if isinstance(exc, NotFoundError) and exc.detail == NO_SUCH_CHAT_OR_MESSAGE:
                missing = NO_SUCH_MESSAGE if parent is not None else NO_SUCH_CHAT
                raise NotFoundError(missing) from None
            raise
        model_used = chosen or self._chat_model(chat)
        return Exchange(question, self._answerer.answer(claim, chat, question, model_used))

    async def regenerate(
        self, user_id: int, chat_id: int, message_id: int, *, model: str | None = None
    ) -> Exchange:
        """A new answer to the question ``message_id`` names (the question, or an
        answer to it): a sibling of the earlier answers, and the chat's new current
        leaf. The exchange's ``user_message`` is the question, already stored.

        ``NotFoundError``, ``ConflictError`` and ``InvalidInputError`` as for
        ``send_message``; then nothing is stored.
        """
        if self._answerer.abandoned:
            raise UnavailableError(SHUTTING_DOWN)
        chosen = None if model is None else self._check_model(model)
        chat = await self._require_chat(user_id, chat_id)
        message = await self._messages.get(user_id, chat_id, message_id)
        if message is not None and message.role is MessageRole.ASSISTANT:
            message = (
                None
                if message.parent_id is None
                else await self._messages.get(user_id, chat_id, message.parent_id)
            )
        if message is None or message.role is not MessageRole.USER:
            raise NotFoundError(NO_SUCH_MESSAGE)
        claim = self._claim(chat)
        model_used = chosen or self._chat_model(chat)
        return Exchange(message, self._answerer.answer(claim, chat, message, model_used))

    async def search_messages(
        self, user_id: int, query: str, *, limit: int = 20
    ) -> list[SearchHit]:
        """The caller's messages matching ``query``, best first."""
        check_page_size(limit)
        if len(query) > MAX_SEARCH_LENGTH:
            raise InvalidInputError(f"At most {MAX_SEARCH_LENGTH} characters.", field="q")
        query = _storable(query, "q").strip()
        if not query:
            raise InvalidInputError("Type something to search for.", field="q")
        return await self._messages.search(user_id, query, limit=limit)

    # --- lifetime -------------------------------------------------------------------

    def abandon_answers(self) -> None:
        """End the answers still streaming, for a server that must stop before
        they could finish: each is stored ``failed`` with the text received so
        far and its reader gets ``UnavailableError`` (ask again). From now on
        messages are refused with that error too."""
        self._answerer.abandon_running()

    async def settle(self) -> None:
        """Wait for background work (answers being stored, titles); for tests."""
        await self._tasks.settle()

    async def aclose(self) -> None:
        """Let background work finish (within the grace period), then release the model."""
        await self._tasks.close(self._rules.shutdown_grace_seconds)
        await self._llm.aclose()

    # --- helpers --------------------------------------------------------------------

    async def _active_branch(self, chat: Chat, *, limit: int) -> list[Message]:
        if chat.current_message_id is None:
            return []
        return await self._messages.branch(
            chat.user_id, chat.id, ending_at=chat.current_message_id, limit=limit
        )

    def _chat_model(self, chat: Chat) -> str:
        """The chat's model, or the default one for a model no longer offered."""
        return chat.model if chat.model in self._rules.models else self._rules.default_model

    def _claim(self, chat: Chat) -> Claim:
        """The chat's answer slot; ``ConflictError`` while an answer holds it."""
        claim = self._answerer.claim(chat.id)
        if claim is None:
            raise AnswerInProgressError(
                "An answer is being written in this chat; wait for it, or stop it, then send again."
            )
        return claim

    async def _require_chat(self, user_id: int, chat_id: int) -> Chat:
        chat = await self._chats.get(user_id, chat_id)
        if chat is None:
            raise NotFoundError(NO_SUCH_CHAT)
        return chat

    def _check_model(self, model: str) -> str:
        if model not in self._rules.models:
            raise InvalidInputError(
                f"Unknown model; choose one of: {', '.join(self._rules.models)}.", field="model"
            )
        return model


def _clean_title(title: str | None) -> str | None:
    """Trimmed, on one line; blank becomes ``None``."""
    if title is None:
        return None
    if len(title) > MAX_TITLE_LENGTH:  # as sent: the limit a client can check
        raise InvalidInputError(f"Titles are at most {MAX_TITLE_LENGTH} characters.", field="title")
    return " ".join(_storable(title, "title").split()) or None


def _check_system_prompt(prompt: str | None) -> str | None:
    """As typed (its layout may matter to the model); blank becomes ``None``."""
    if prompt is not None and len(prompt) > MAX_SYSTEM_PROMPT_LENGTH:
        raise InvalidInputError(
            f"System prompts are at most {MAX_SYSTEM_PROMPT_LENGTH} characters.",
            field="system_prompt",
        )
    return _storable(prompt, "system_prompt") if prompt and prompt.strip() else None


_Text = TypeVar("_Text", str, str | None)


def _storable(text: _Text, field: str) -> _Text:
    """``text`` unless it holds a NUL, which no text column can store."""
    if text is not None and "\x00" in text:
        raise InvalidInputError("Text cannot contain NUL (U+0000) characters.", field=field)
    return text


def _check_content(content: str) -> str:
    _storable(content, "content")
    if not content.strip():
        raise InvalidInputError("A message needs some text.", field="content")
    if len(content) > MAX_CONTENT_LENGTH:
        raise InvalidInputError(
            f"Messages are at most {MAX_CONTENT_LENGTH} characters.", field="content"
        )
    return content


def _check_file_ids(file_ids: Sequence[int]) -> tuple[int, ...]:
    """Without repeats, in the order given; the limit counts the ids as sent."""
    if len(file_ids) > MAX_FILES_PER_MESSAGE:
        raise InvalidInputError(
            f"At most {MAX_FILES_PER_MESSAGE} files per message.", field="file_ids"
        )
    return tuple(dict.fromkeys(file_ids))
