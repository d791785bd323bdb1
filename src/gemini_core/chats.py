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

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gemini_core.answers import (
    SHUTTING_DOWN,
    Answerer,
    AnswerSettings,
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
    NewAnswer,
    NewChat,
    NewMessage,
)
from gemini_core.errors import (
    GeminiError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    UnavailableError,
)
from gemini_core.llm import LlmClient
from gemini_core.pagination import (
    check_page_size,
    decode_chat_cursor,
    encode_chat_cursor,
    fetch_page,
)
from gemini_core.ports import (
    AnswerOwner,
    AnswerSignals,
    ChatRepository,
    FileUploadRepository,
    MessageRepository,
    SearchHit,
)
from gemini_core.storage import FileStorage
from gemini_core.streams import (
    AnswerDelta,
    AnswerDone,
    AnswerEvent,
    AnswerFailed,
    AnswerRelay,
    AnswerStopped,
    end_of,
)
from gemini_core.tasks import TaskKeeper, stop
from gemini_core.telemetry import QuotaRefused, Telemetry
from gemini_core.usage import Quotas

log = logging.getLogger(__name__)

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
    "AnswerEvent",
    "AnswerFailed",
    "AnswerStopped",
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
NO_SUCH_ANSWER = "No such answer in this chat."
# How long ``stop`` waits for this process's stopped answers to store their text.
STOP_WAIT_SECONDS = 2.0
# After the grace period at close, how long abandoned answers get to be stored.
ABANDON_STORE_SECONDS = 5.0


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
    """What answers being written and other background work (titles) get at
    ``aclose``; answers still running then are stored ``failed``."""
    progress_seconds: float = 1.0
    """How often the text of answers being written is stored while it grows."""
    sweep_seconds: float = 60.0
    """How often answers of processes that died are looked for (and at start)."""
    max_running_per_user: int | None = 3
    """Answers one user may have being written at once, across every process
    (``TooManyAnswersError`` beyond); ``None``: no limit."""

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
        owner: AnswerOwner,
        signals: AnswerSignals,
        quotas: Quotas | None = None,
    ) -> None:
        """``quotas`` decides the day each answer counts on and the user's daily
        limits; without it answers count on the store's day, unlimited."""
        if not rules.models:
            raise ValueError("at least one model must be allowed")
        self._chats = chats
        self._messages = messages
        self._files = files
        self._llm = llm
        self._rules = rules
        self._owner = owner
        self._quotas = quotas
        self._telemetry = telemetry
        self._tasks = TaskKeeper()
        self._relay = AnswerRelay(
            messages=messages, signals=signals, progress_seconds=rules.progress_seconds
        )
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
            relay=self._relay,
            tasks=self._tasks,
            telemetry=telemetry,
        )
        self._started: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

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
        """Store the user's message and its answer, ``streaming``, and start writing
        the answer; return both with the answer's events.

        The message follows the chat's current leaf, or ``parent_id`` when given
        (``None``: a new first message); following an earlier message is how a
        question is edited, and starts a branch. ``model`` answers this once with
        another of the allowed models. The answer becomes the chat's current leaf.

        Refused with nothing stored: ``NotFoundError`` for a chat, parent or file
        that is not the caller's; ``AnswerInProgressError`` while an answer of
        the chat is being written (by any process); ``TooManyAnswersError`` when
        the caller has as many being written as allowed; ``QuotaExceededError``
        when the caller has used up a daily quota; ``InvalidInputError`` for an
        unknown model; ``UnavailableError`` once answers are abandoned.
        """
        if self._answerer.abandoned:  # stored now, it could only get a failed answer
            raise UnavailableError(SHUTTING_DOWN)
        content = _check_content(content)
        wanted = _check_file_ids(file_ids)
        chosen = None if model is None else self._check_model(model)
        chat = await self._require_chat(user_id, chat_id)
        await self._ready()
        if wanted and len(await self._files.owned(user_id, wanted)) != len(wanted):
            raise NotFoundError("No such file.")
        # The current leaf is read by the store, as it is when the message goes in.
        follows_leaf = isinstance(parent_id, CurrentLeaf)
        parent = None if isinstance(parent_id, CurrentLeaf) else parent_id
        question = NewMessage(
            chat_id=chat.id,
            user_id=user_id,
            role=MessageRole.USER,
            content=content,
            file_ids=wanted,
            parent_id=parent,
            after_current_leaf=follows_leaf,
        )
        try:
            return await self._start(chat, chosen, question=question)
        except NotFoundError as exc:
            if exc.detail == NO_SUCH_CHAT_OR_MESSAGE:
                missing = NO_SUCH_MESSAGE if parent is not None else NO_SUCH_CHAT
                raise NotFoundError(missing) from None
            raise

    async def regenerate(
        self, user_id: int, chat_id: int, message_id: int, *, model: str | None = None
    ) -> Exchange:
        """A new answer to the question ``message_id`` names (the question, or an
        answer to it): a sibling of the earlier answers, and the chat's new current
        leaf. The exchange's ``user_message`` is the question, already stored.

        Refusals as for ``send_message``; then nothing is stored.
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
        await self._ready()
        try:
            return await self._start(chat, chosen, question_id=message.id)
        except NotFoundError:
            raise NotFoundError(NO_SUCH_MESSAGE) from None

    async def _start(
        self,
        chat: Chat,
        model: str | None,
        *,
        question: NewMessage | None = None,
        question_id: int | None = None,
    ) -> Exchange:
        quota = None if self._quotas is None else await self._quotas.today_for(chat.user_id)
        try:
            stored_question, answer = await self._messages.start_answer(
                NewAnswer(
                    chat_id=chat.id,
                    user_id=chat.user_id,
                    model=model or self._chat_model(chat),
                    owner=self._owner.key,
                    question=question,
                    question_id=question_id,
                    max_running=self._rules.max_running_per_user,
                    quota=quota,
                )
            )
        except QuotaExceededError as exc:
            self._telemetry.quota_refused(QuotaRefused(user_id=chat.user_id, unit=exc.unit))
            raise
        run = self._answerer.begin(chat, stored_question, answer)
        return Exchange(stored_question, answer, run.track.follow())

    async def follow(
        self, user_id: int, chat_id: int, message_id: int, *, offset: int = 0
    ) -> tuple[Message, AsyncIterator[AnswerEvent]]:
        """An answer of the caller's chat, as stored now, and its events from
        ``offset`` characters on: the text after it as one delta, then (while it
        is being written, by whichever process) each new piece, then its end.
        ``NotFoundError`` for a message that is not an answer in the caller's chat."""
        if offset < 0:
            raise InvalidInputError("An offset counts characters from 0.", field="offset")
        message = await self._messages.get(user_id, chat_id, message_id)
        if message is None or message.role is not MessageRole.ASSISTANT:
            raise NotFoundError(NO_SUCH_ANSWER)
        run = self._relay.runs.get(message.id)
        if run is not None:
            return message, run.track.follow(offset)
        if message.status.final and message.owner is None:
            return message, _finished(message, offset)
        await self._ready()
        return message, self._relay.follow_elsewhere(message, offset)

    async def stop(self, user_id: int, chat_id: int) -> list[int]:
        """Stop the chat's answers being written, by whichever process: each is
        stored ``stopped`` with its text so far. Their ids (none: nothing was
        running). ``NotFoundError`` for a chat that is not the caller's."""
        await self._require_chat(user_id, chat_id)
        await self._ready()
        stopped = await self._messages.stop_answers(user_id, chat_id)
        self._relay.stop(chat_id, stopped)
        # This process's own stop at once; give them a moment to store their text.
        here = [run.track for i in stopped if (run := self._relay.runs.get(i)) is not None]
        if here:
            try:
                async with asyncio.timeout(STOP_WAIT_SECONDS):
                    await asyncio.gather(*(track.ended() for track in here))
            except TimeoutError:
                pass
        return stopped

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

    async def start(self) -> None:
        """Take this process's answer key, listen to the other processes, and
        fail the answers of processes that died. Done by the first call that
        needs it if not before."""
        await self._ready()

    async def _ready(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start_once())
        await asyncio.shield(self._started)

    async def _start_once(self) -> None:
        await self._owner.start()
        await self._relay.start()
        await self._sweep()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_now_and_then())

    async def _sweep(self) -> None:
        failed = await self._messages.fail_orphaned()
        if failed:
            log.warning(
                "%d answers of processes that died were marked failed",
                len(failed),
                extra={"event": "orphaned_answers", "messages": failed},
            )

    async def _sweep_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self._rules.sweep_seconds)
            try:
                await self._sweep()
            except GeminiError as exc:
                log.warning("looking for answers of dead processes failed: %s", exc.detail)

    def abandon_answers(self) -> None:
        """End the answers being written here, for a server that must stop before
        they could finish: each is stored ``failed`` with its text so far and its
        readers get ``UnavailableError`` (ask again). From now on messages are
        refused with that error too."""
        self._answerer.abandon_running()

    async def settle(self) -> None:
        """Wait for background work (answers being written, titles); for tests."""
        await self._tasks.settle()

    async def aclose(self) -> None:
        """Let answers and other background work finish within the grace period,
        store what is still running as ``failed``, then release everything."""
        try:
            async with asyncio.timeout(self._rules.shutdown_grace_seconds):
                await self._tasks.settle()
        except TimeoutError:
            self.abandon_answers()
        await self._tasks.close(ABANDON_STORE_SECONDS)
        await stop(*(task for task in (self._sweeper, self._started) if task is not None))
        if self._started is not None:
            await self._relay.aclose()
            await self._owner.aclose()
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


async def _finished(message: Message, offset: int) -> AsyncIterator[AnswerEvent]:
    """A finished answer's events: its text after ``offset``, then its end."""
    if len(message.content) > offset:
        yield AnswerDelta(message.content[offset:], len(message.content))
    yield end_of(message)


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
