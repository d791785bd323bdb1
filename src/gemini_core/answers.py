"""Writing the model's answer to a stored question, and a title for a new chat.

An answer is started by ``ChatService`` (stored ``streaming`` at once) and
written here by a task of its own, never by the request that asked for it: a
``Run`` (see ``streams``) holds its text as it grows, which any number of
readers follow. However the answer ends, its end is stored exactly once:

- complete: with the whole text, the model and its token counts;
- a model failure (``UpstreamError`` and friends) before or during the answer,
  or the call outliving its time: ``failed``, holding the text received so far;
- stopped by its user (``ChatService.stop``): ``stopped``, with the text so far;
- the server must stop before the answer could finish (``abandon_running``):
  ``failed`` with the text so far, and its readers get ``UnavailableError``.

No database connection is held while the model is thought about: the
repositories borrow one per statement.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
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
from gemini_core.streams import (
    AnswerDone,
    AnswerEnd,
    AnswerEvent,
    AnswerFailed,
    AnswerRelay,
    AnswerStopped,
    Interrupted,
    Interruption,
    Run,
    end_of,
)
from gemini_core.tasks import TaskKeeper
from gemini_core.telemetry import ModelCall, ModelCallOutcome, ModelCallPurpose, Telemetry
from gemini_core.usage import accounted

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
# What of the history the model sees: not failed answers, nor one still being written.
_SEEN = (MessageStatus.COMPLETE, MessageStatus.STOPPED)
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
class Exchange:
    """A question, its answer as stored when it started (``streaming``, empty),
    and in ``events`` the answer as it is written: deltas, then its end. Leaving
    ``events`` unread, or closing it, changes nothing for the answer."""

    user_message: Message
    answer: Message
    events: AsyncIterator[AnswerEvent]

    async def complete(self) -> Message:
        """Wait for the answer's end and return it as stored: complete, or stopped;
        a failure raises its error."""
        async with aclosing(self.events) as events:  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, AnswerDone | AnswerStopped):
                    return event.message
                if isinstance(event, AnswerFailed):
                    raise event.error
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
    """Builds the model's view of a chat, writes its answers, titles chats."""

    def __init__(
        self,
        *,
        chats: ChatRepository,
        messages: MessageRepository,
        files: FileUploadRepository,
        images: ImageSource,
        llm: LlmClient,
        settings: AnswerSettings,
        relay: AnswerRelay,
        tasks: TaskKeeper,
        telemetry: Telemetry,
    ) -> None:
        self._chats = chats
        self._messages = messages
        self._files = files
        self._images = images
        self._llm = llm
        self._settings = settings
        self._relay = relay
        self._tasks = tasks
        self._telemetry = telemetry
        self._titling: set[int] = set()
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon_running(self) -> None:
        """End every answer being written here, and any started from now on: each
        is stored ``failed`` with the text so far, its readers get ``UnavailableError``."""
        self._abandoned = True
        for run in list(self._relay.runs.values()):
            run.interrupt(Interruption.ABANDONED)

    def begin(self, chat: Chat, question: Message, answer: Message) -> Run:
        """Write the stored ``streaming`` ``answer`` to ``question`` in a task of its own."""
        loop = asyncio.get_running_loop()
        run = Run(chat, question, answer, deadline=loop.time() + self._settings.timeout_seconds)
        self._relay.add(run)
        if self._abandoned:
            run.interrupt(Interruption.ABANDONED)
        self._tasks.spawn(self._write(run))
        return run

    async def _write(self, run: Run) -> None:
        chat, question = run.chat, run.question
        model = run.message.model or chat.model
        usage = Usage(prompt_tokens=None, completion_tokens=None)
        started = time.perf_counter()
        first_piece_at: float | None = None
        pieces = 0
        outcome: ModelCallOutcome = "cancelled"
        status = MessageStatus.FAILED
        error: GeminiError | None = None
        request: LlmRequest | None = None
        try:
            try:
                request = LlmRequest(
                    model=model,
                    system_prompt=chat.system_prompt,
                    turns=await self._turns(chat, question),
                    timeout_seconds=self._settings.timeout_seconds,
                )
                async with run.interruptible(), aclosing(self._llm.stream(request)) as stream:
                    async for item in stream:
                        if isinstance(item, Usage):
                            usage = item
                        elif isinstance(item, LlmChunk) and item.text:
                            if first_piece_at is None:
                                first_piece_at = time.perf_counter()
                            pieces += 1
                            self._relay.append(run, item.text)
                if not run.track.text.strip():
                    raise UpstreamError("The model sent an empty answer.")
                status, outcome = MessageStatus.COMPLETE, "ok"
            except Interrupted:
                if run.interruption is Interruption.STOPPED:
                    status = MessageStatus.STOPPED
                elif run.interruption is Interruption.TIMED_OUT:
                    error = UpstreamTimeoutError(
                        f"The model took longer than {self._settings.timeout_seconds:g} seconds."
                    )
                    outcome = "timeout"
                else:
                    error = UnavailableError(SHUTTING_DOWN)
            except GeminiError as exc:
                # An answer cut short by a server that is stopping is not the model's fault.
                error = exc
                outcome = "cancelled" if self._abandoned else outcome_of(exc)
            except Exception:
                log.exception("answering chat %s failed", chat.id)
                error, outcome = GeminiError(UNEXPECTED), "error"
        finally:
            # What the model did not report is estimated: every answer counts.
            usage = accounted(usage, request, run.track.text)

            def report() -> None:
                self._report("answer", chat, model, outcome, started, first_piece_at, usage, pieces)

            # Even when this task is cancelled (the server closing), the end is
            # stored: in a task of its own, which the cancellation cannot reach.
            ending = self._store_end(run, status, error, usage, report)
            end = await asyncio.shield(asyncio.ensure_future(ending))
        if isinstance(end, AnswerDone):
            self._title_later(chat, question, end.message)

    async def _store_end(
        self,
        run: Run,
        status: MessageStatus,
        error: GeminiError | None,
        usage: Usage,
        report: Callable[[], None],
    ) -> AnswerEnd:
        """Store the end, report the call, then tell the readers (in that order, so
        a reader that saw the end finds it stored and counted)."""
        end: AnswerEnd
        try:
            stored = await self._messages.finish_answer(
                run.id,
                status=status,
                content=run.track.text,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        except GeminiError as exc:
            log.error("could not store the end of answer %s: %s", run.id, exc.detail)
            stored = None
        if stored is None:
            end = AnswerFailed(error or UpstreamError("The answer could not be stored."), None)
        elif stored.status is MessageStatus.FAILED and error is not None:
            end = AnswerFailed(error, stored)
        else:
            end = end_of(stored)
        report()
        run.track.finish(end)
        self._relay.ended(run)
        return end

    # --- what the model sees ------------------------------------------------------

    async def _turns(self, chat: Chat, question: Message) -> tuple[ChatTurn, ...]:
        """The question's branch: its newest messages (up to the configured number,
        the question included), oldest first, without failed answers, starting with
        the user. Other branches are not the model's business; stopped answers are
        seen as far as they went."""
        earlier_limit = self._settings.max_history_messages - 1
        earlier = (
            await self._messages.branch(
                chat.user_id, chat.id, ending_at=question.id, limit=earlier_limit, inclusive=False
            )
            if earlier_limit > 0
            else []
        )
        window = [m for m in earlier if m.status in _SEEN and m.content]
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
