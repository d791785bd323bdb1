"""Getting the model's answer to a stored message, and a title for a new chat.

An ``Exchange`` is a user's message already stored plus the answer on its way:
``events`` yields ``AnswerDelta``s as the model's pieces arrive, then
``AnswerDone`` with the stored assistant message. However the answer ends, an
assistant message is stored exactly once:

- complete: with the whole text, the model and its token counts;
- a model failure (``UpstreamError`` and friends) before or during the answer:
  ``failed``, holding the text received so far, then the error is raised;
- the reader goes away (the task is cancelled, or the iterator is closed before
  the end, as when an HTTP client disconnects): the model call is abandoned at
  once and what arrived is stored ``failed``;
- the server must stop before the answer could finish (``abandon_running``):
  the model call is abandoned at once, what arrived is stored ``failed``, then
  ``UnavailableError`` is raised, so the reader can tell its user to ask again.

Stores run in tasks of their own, so a cancellation that hits the reader
cannot cut them short; the service keeps a reference to every such task.
No database connection is held while the model is thought about: the
repositories borrow one per statement.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from gemini_core.entities import (
    Chat,
    ChatChanges,
    FileUpload,
    Message,
    MessageRole,
    MessageStatus,
    NewMessage,
)
from gemini_core.errors import (
    GeminiError,
    UnavailableError,
    UpstreamError,
    UpstreamQuotaError,
    UpstreamTimeoutError,
)
from gemini_core.llm import ChatTurn, ImagePart, LlmChunk, LlmClient, LlmRequest, Usage
from gemini_core.ports import ChatRepository, FileUploadRepository, MessageRepository
from gemini_core.tasks import TaskKeeper
from gemini_core.telemetry import ModelCall, ModelCallOutcome, ModelCallPurpose, Telemetry

log = logging.getLogger(__name__)

# Earlier messages' images ride along while they fit these budgets (newest
# first); the new message's own images always go.
MAX_HISTORY_IMAGES = 16
MAX_HISTORY_IMAGE_BYTES = 16 * 1024 * 1024
TITLE_WORDS = 6
TITLE_CHARACTERS = 80
TITLE_TIMEOUT_SECONDS = 30.0
_TITLE_PROMPT = (
    "Write a title of at most six words for the conversation below. "
    "Answer with the title alone: no quotes, no final punctuation."
)
UNEXPECTED = "Something went wrong on our side; it has been logged."
SHUTTING_DOWN = "The server is shutting down; ask again."


class ImageSource(Protocol):
    async def read(self, upload: FileUpload) -> bytes:
        """The stored bytes of ``upload``.

        ``NotFoundError`` when they are gone, ``UnavailableError`` when the
        store cannot be reached.
        """
        ...


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The answer is complete and stored."""

    message: Message


class Claim:
    """A chat's answer slot, held while one answer of the chat is written."""

    def __init__(self, chat_id: int, held: set[int]) -> None:
        self._chat_id = chat_id
        self._held: set[int] | None = held

    def release(self) -> None:
        if self._held is not None:
            self._held.discard(self._chat_id)
            self._held = None


class AnswerEvents:
    """The events of one answer: an async iterator over the answer's generator that
    releases the chat's claim when the answer ends or is closed, even unread
    (closing a generator that never started runs none of its code)."""

    def __init__(
        self, events: AsyncGenerator[AnswerDelta | AnswerDone, None], claim: Claim
    ) -> None:
        self._events = events
        self._claim = claim

    def __aiter__(self) -> AnswerEvents:
        return self

    async def __anext__(self) -> AnswerDelta | AnswerDone:
        try:
            return await anext(self._events)
        except BaseException:
            self._claim.release()
            raise

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._claim.release()


@dataclass(frozen=True, slots=True)
class Exchange:
    """A stored user message and, in ``events``, the answer to it (read it once)."""

    user_message: Message
    events: AnswerEvents

    async def complete(self) -> Message:
        """Wait for the whole answer and return it as stored; raises as ``events`` does."""
        async with aclosing(self.events) as events:
            async for event in events:
                if isinstance(event, AnswerDone):
                    return event.message
        raise UpstreamError("The answer ended without being stored.")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class AnswerSettings:
    max_history_messages: int
    timeout_seconds: float
    model_titles: bool
    title_model: str = ""
    """The model that writes titles (the deployment's default): a chat on an
    offline or small model still gets a title from the main one."""


class Answerer:
    """Builds the model's view of a chat, streams its answer, stores it, titles chats."""

    def __init__(
        self,
        *,
        chats: ChatRepository,
        messages: MessageRepository,
        files: FileUploadRepository,
        images: ImageSource,
        llm: LlmClient,
        settings: AnswerSettings,
        tasks: TaskKeeper,
        telemetry: Telemetry,
    ) -> None:
        self._chats = chats
        self._messages = messages
        self._files = files
        self._images = images
        self._llm = llm
        self._settings = settings
        self._tasks = tasks
        self._telemetry = telemetry
        self._titling: set[int] = set()
        self._answering: set[int] = set()  # the chats with an answer being written
        self._abandoned = False
        self._model_waits: set[asyncio.Timeout] = set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon_running(self) -> None:
        """End every answer under way, and any started from now on, with
        ``UnavailableError``; each is stored ``failed`` with the text so far."""
        self._abandoned = True
        now = asyncio.get_running_loop().time()
        for wait in self._model_waits:
            wait.reschedule(now)

    def claim(self, chat_id: int) -> Claim | None:
        """The chat's one answer slot in this process, or ``None`` while an answer
        of the chat holds it. Taken and checked in one step (no await between), so
        of concurrent sends one gets it; hand it to ``answer``, or ``release`` it."""
        if chat_id in self._answering:
            return None
        claim = Claim(chat_id, self._answering)
        self._answering.add(chat_id)
        return claim

    def answer(self, claim: Claim, chat: Chat, question: Message, model: str) -> AnswerEvents:
        """The answer's events (see ``Exchange``); the claim is released when they
        end or are closed, even unread."""
        return AnswerEvents(self._answer(chat, question, model), claim)

    async def _answer(
        self, chat: Chat, question: Message, model: str
    ) -> AsyncGenerator[AnswerDelta | AnswerDone, None]:
        pieces: list[str] = []
        usage = Usage(prompt_tokens=None, completion_tokens=None)
        saving: asyncio.Task[Message] | None = None
        started = time.perf_counter()
        first_piece_at: float | None = None
        outcome: ModelCallOutcome = "cancelled"

        def store(status: MessageStatus) -> asyncio.Task[Message]:
            return self._tasks.spawn(
                self._messages.add(
                    NewMessage(
                        chat_id=chat.id,
                        user_id=chat.user_id,
                        parent_id=question.id,
                        role=MessageRole.ASSISTANT,
                        content="".join(pieces),
                        status=status,
                        model=model,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                    )
                )
            )

        try:
            try:
                request = LlmRequest(
                    model=model,
                    system_prompt=chat.system_prompt,
                    turns=await self._turns(chat, question),
                    timeout_seconds=self._settings.timeout_seconds,
                )
                async with aclosing(self._llm.stream(request)) as stream:
                    while (item := await self._next_from(stream)) is not None:
                        if isinstance(item, Usage):
                            usage = item
                        elif item.text:
                            if first_piece_at is None:
                                first_piece_at = time.perf_counter()
                            pieces.append(item.text)
                            yield AnswerDelta(item.text)
                if not "".join(pieces).strip():
                    raise UpstreamError("The model sent an empty answer.")
            except GeminiError as exc:
                # An answer cut short by a server that is stopping is not the model's fault.
                outcome = "cancelled" if self._abandoned else outcome_of(exc)
                saving = store(MessageStatus.FAILED)
                await asyncio.shield(saving)
                raise
            except Exception as exc:
                log.exception("answering chat %s failed", chat.id)
                outcome = "error"
                saving = store(MessageStatus.FAILED)
                await asyncio.shield(saving)
                raise GeminiError(UNEXPECTED) from exc
            outcome = "ok"
            saving = store(MessageStatus.COMPLETE)
            answer = await asyncio.shield(saving)
            self._title_later(chat, question, answer)
            yield AnswerDone(answer)
        finally:
            if saving is None:
                # The reader went away mid-answer: leaving this frame abandoned
                # the model call; what arrived is kept, marked failed.
                store(MessageStatus.FAILED)
            self._report(
                "answer", chat, model, outcome, started, first_piece_at, usage, len(pieces)
            )

    async def _next_from(self, stream: AsyncIterator[LlmChunk | Usage]) -> LlmChunk | Usage | None:
        """The model's next item, or ``None`` after the last; ``UnavailableError``
        once answers are abandoned, even in the middle of the wait."""
        if self._abandoned:
            raise UnavailableError(SHUTTING_DOWN)
        # A deadline with no time set, which ``abandon_running`` brings forward.
        # It wraps this one wait and none of the answer's yields, so the
        # cancellation it causes lands on the model call, never on whatever
        # the reader is awaiting between two pieces.
        try:
            async with asyncio.timeout(None) as wait:
                self._model_waits.add(wait)
                try:
                    return await anext(stream)
                finally:
                    self._model_waits.discard(wait)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if wait.expired():
                raise UnavailableError(SHUTTING_DOWN) from None
            raise

    # --- what the model sees ------------------------------------------------------

    async def _turns(self, chat: Chat, question: Message) -> tuple[ChatTurn, ...]:
        """The question's branch: its newest messages (up to the configured number,
        the question included), oldest first, without failed answers, starting with
        the user. Other branches are not the model's business."""
        earlier_limit = self._settings.max_history_messages - 1
        earlier = (
            await self._messages.branch(
                chat.user_id, chat.id, ending_at=question.id, limit=earlier_limit, inclusive=False
            )
            if earlier_limit > 0
            else []
        )
        window = [m for m in earlier if m.status is MessageStatus.COMPLETE and m.content]
        while window and window[0].role is MessageRole.ASSISTANT:
            window.pop(0)
        window.append(question)
        images = await self._images_for(chat.user_id, window, question)
        return tuple(
            ChatTurn(
                role=m.role,
                text=m.content,
                images=tuple(images[i] for i in m.file_ids if i in images),
            )
            for m in window
        )

    async def _images_for(
        self, user_id: int, window: Sequence[Message], question: Message
    ) -> dict[int, ImagePart]:
        wanted = list(dict.fromkeys(i for m in reversed(window) for i in m.file_ids))
        if not wanted:
            return {}
        owned = {u.id: u for u in await self._files.owned(user_id, wanted)}
        required = [owned[i] for i in question.file_ids if i in owned]
        optional: list[FileUpload] = []
        budget_count = MAX_HISTORY_IMAGES - len(required)
        budget_bytes = MAX_HISTORY_IMAGE_BYTES - sum(u.file_size for u in required)
        for file_id in wanted:
            upload = owned.get(file_id)
            if upload is None or file_id in question.file_ids:
                continue
            if budget_count <= 0 or upload.file_size > budget_bytes:
                break
            optional.append(upload)
            budget_count -= 1
            budget_bytes -= upload.file_size
        required_bytes = await asyncio.gather(*(self._images.read(u) for u in required))
        optional_bytes = await asyncio.gather(
            *(self._images.read(u) for u in optional), return_exceptions=True
        )
        parts = {
            u.id: ImagePart(mime_type=u.content_type, data=data)
            for u, data in zip(required, required_bytes, strict=True)
        }
        for upload, result in zip(optional, optional_bytes, strict=True):
            if isinstance(result, bytes):
                parts[upload.id] = ImagePart(mime_type=upload.content_type, data=result)
            else:  # an earlier image that is gone: the conversation goes on without it
                log.warning("image %s of an earlier message is unreadable: %r", upload.id, result)
        return parts

    # --- titles -------------------------------------------------------------------

    def _title_later(self, chat: Chat, question: Message, answer: Message) -> None:
        """Give an untitled chat a title from this exchange, in the background."""
        if chat.title is not None or chat.id in self._titling:
            return
        self._titling.add(chat.id)
        task = self._tasks.spawn(self._write_title(chat, question.content, answer))
        task.add_done_callback(lambda _: self._titling.discard(chat.id))

    async def _write_title(self, chat: Chat, question: str, answer: Message) -> None:
        title = first_words(question)
        if self._settings.model_titles:
            try:
                title = await self._model_title(chat, question, answer) or title
            except GeminiError as exc:
                log.warning("no title from the model for chat %s: %s", chat.id, exc.detail)
        current = await self._chats.get(chat.user_id, chat.id)
        if current is not None and current.title is None:  # not renamed meanwhile
            await self._chats.update(chat.user_id, chat.id, ChatChanges(title=title))

    async def _model_title(self, chat: Chat, question: str, answer: Message) -> str:
        model = self._settings.title_model or answer.model or chat.model
        conversation = f"User: {question[:2000]}\n\nAssistant: {answer.content[:2000]}"
        request = LlmRequest(
            model=model,
            system_prompt=_TITLE_PROMPT,
            turns=(ChatTurn(role=MessageRole.USER, text=conversation),),
            timeout_seconds=min(self._settings.timeout_seconds, TITLE_TIMEOUT_SECONDS),
        )
        pieces: list[str] = []
        usage = Usage(prompt_tokens=None, completion_tokens=None)
        started = time.perf_counter()
        outcome: ModelCallOutcome = "cancelled"
        try:
            async with aclosing(self._llm.stream(request)) as stream:
                async for item in stream:
                    if isinstance(item, LlmChunk):
                        pieces.append(item.text)
                    else:
                        usage = item
            outcome = "ok"
        except GeminiError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self._report("title", chat, model, outcome, started, None, usage, len(pieces))
        return clean_title("".join(pieces))

    # --- the record of each call ----------------------------------------------------

    def _report(
        self,
        purpose: ModelCallPurpose,
        chat: Chat,
        model: str,
        outcome: ModelCallOutcome,
        started: float,
        first_piece_at: float | None,
        usage: Usage,
        pieces: int,
    ) -> None:
        self._telemetry.model_called(
            ModelCall(
                purpose=purpose,
                model=model,
                outcome=outcome,
                chat_id=chat.id,
                user_id=chat.user_id,
                duration_seconds=round(time.perf_counter() - started, 4),
                first_token_seconds=(
                    None if first_piece_at is None else round(first_piece_at - started, 4)
                ),
                pieces=pieces,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )


def outcome_of(error: GeminiError) -> ModelCallOutcome:
    """The few outcomes the metrics tell apart."""
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, UpstreamQuotaError):
        return "quota"
    return "error"


_WORD = re.compile(r"\S+")
# Quotes (straight and typographic) and markdown a model may wrap a title in.
_TITLE_DECORATION = " \t\"'`*#_\u201c\u201d\u2018\u2019\u00ab\u00bb"


def first_words(text: str, words: int = TITLE_WORDS, limit: int = TITLE_CHARACTERS) -> str:
    """A title from the start of a message: its first few words, shortened with '…'."""
    found = _WORD.findall(text)
    title = " ".join(found[:words])
    if len(title) > limit:
        title = title[: limit - 1].rstrip() + "…"
    elif len(found) > words:
        title += "…"
    return title or "New chat"


def clean_title(text: str) -> str:
    """The model's title without quotes, markup, a trailing full stop or extra lines."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = re.sub(r"^(title\s*:\s*)", "", line.strip(), flags=re.IGNORECASE)
    line = " ".join(line.strip(_TITLE_DECORATION).split()).rstrip(".:;")
    if len(line) > TITLE_CHARACTERS:
        line = line[: TITLE_CHARACTERS - 1].rstrip() + "…"
    return line
