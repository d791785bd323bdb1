"""Answers the server owns: their text as it grows, and the readers that follow it.

An answer is written by a task of the process that started it, never by the
request that asked for it, so a reader going away changes nothing. Whoever
reads it (the request that started it, a reload, a second tab, a request on
another worker or host) follows an ``AnswerTrack``: the text so far, then each
new piece, then how the answer ended.

- In the writing process the track is the writer's own (``Run``).
- In another process a mirror track is filled through ``AnswerSignals``
  (``AnswerRelay``): the reader's process asks the owner to ``follow`` the
  answer; the owner sends the whole text so far, then every new piece, each
  with the offset it starts at, so a mirror repeats nothing and misses nothing
  whatever it joined; when the answer ends the owner sends ``end`` and the
  mirror reads the stored message. A mirror also reads the store now and then,
  in case a signal was lost or the owner died.
- ``stop`` is sent to every process; the store is the arbiter (see
  ``MessageRepository.stop_answers``), the signal only makes the owner end
  the model call at once.

A reader holds nothing but its offset: a slow one never slows the writer or
another reader, and a reader that falls behind gets what it missed as one
piece.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gemini_core.entities import Chat, Message, MessageStatus
from gemini_core.errors import GeminiError, UpstreamError
from gemini_core.ports import AnswerSignals, MessageRepository
from gemini_core.tasks import stop

log = logging.getLogger(__name__)

__all__ = [
    "AnswerDelta",
    "AnswerDone",
    "AnswerEnd",
    "AnswerEvent",
    "AnswerFailed",
    "AnswerRelay",
    "AnswerStopped",
    "AnswerTrack",
    "Interruption",
    "Run",
]

# Characters per ``text`` signal: even at six bytes a character (an escaped
# control character) one stays under ``MAX_SIGNAL_BYTES``.
SIGNAL_TEXT_CHARACTERS = 1000
# How often a mirror reads the store while it waits (a lost signal, a dead owner).
MIRROR_CHECK_SECONDS = 2.0
# Signals waiting to go out, beyond which new ones are dropped (and logged):
# a signal engine that is down must not grow the process without bound.
MAX_OUTGOING_SIGNALS = 10_000
BROKEN_OFF = "The answer broke off before it was finished; ask again."


# --- what a reader sees -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """The next piece of the answer's text; ``offset`` is the number of characters
    of the answer up to the end of this piece."""

    text: str
    offset: int


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The answer is complete and stored."""

    message: Message


@dataclass(frozen=True, slots=True)
class AnswerStopped:
    """The answer was stopped by its user; stored with its text so far."""

    message: Message


@dataclass(frozen=True, slots=True)
class AnswerFailed:
    """The answer failed; ``message`` is the stored ``failed`` answer (``None`` if
    it could not be stored, or its chat is gone)."""

    error: GeminiError
    message: Message | None


AnswerEnd = AnswerDone | AnswerStopped | AnswerFailed
AnswerEvent = AnswerDelta | AnswerEnd


def end_of(message: Message) -> AnswerEnd:
    """How a stored, finished answer ended, as a reader is told."""
    if message.status is MessageStatus.COMPLETE:
        return AnswerDone(message)
    if message.status is MessageStatus.STOPPED:
        return AnswerStopped(message)
    return AnswerFailed(UpstreamError(BROKEN_OFF), message)


class AnswerTrack:
    """An answer's text as it grows, and how it ended; followed by any number of readers."""

    def __init__(self, text: str = "") -> None:
        self._pieces: list[str] = [text] if text else []
        self._ends: list[int] = [len(text)] if text else []  # offset after each piece
        self._changed = asyncio.Event()
        self.end: AnswerEnd | None = None

    @property
    def length(self) -> int:
        return self._ends[-1] if self._ends else 0

    @property
    def text(self) -> str:
        return self.text_from(0)

    def text_from(self, offset: int) -> str:
        """The text after ``offset`` characters."""
        first = bisect.bisect_right(self._ends, offset)
        if first >= len(self._pieces):
            return ""
        start = self._ends[first] - len(self._pieces[first])
        return self._pieces[first][offset - start :] + "".join(self._pieces[first + 1 :])

    def append(self, text: str) -> None:
        if text and self.end is None:
            self._pieces.append(text)
            self._ends.append(self.length + len(text))
            self._wake()

    def finish(self, end: AnswerEnd) -> None:
        if self.end is None:
            # The stored text is the truth: a mirror that missed the last pieces
            # (or an owner that wrote more than it sent) catches up here.
            message = end.message
            if message is not None and len(message.content) > self.length:
                self._pieces.append(message.content[self.length :])
                self._ends.append(len(message.content))
            self.end = end
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def ended(self) -> AnswerEnd:
        """Wait for the end."""
        while self.end is None:
            await self._changed.wait()
        return self.end

    async def follow(self, offset: int = 0) -> AsyncIterator[AnswerEvent]:
        """The text after ``offset`` as one delta (when there is any), then each
        new piece, then the end."""
        sent = offset
        while True:
            if self.length > sent:
                text = self.text_from(sent)
                sent = self.length
                yield AnswerDelta(text, sent)
            elif self.end is not None:
                yield self.end
                return
            else:
                await self._changed.wait()


# --- an answer this process writes --------------------------------------------------


class Interruption(Enum):
    STOPPED = "stopped"
    """Its user stopped it."""
    ABANDONED = "abandoned"
    """The server is stopping."""
    TIMED_OUT = "timed out"
    """It outlived the time one model call may take."""


class Run:
    """An answer being written here: its stored message, its track, and the
    means to interrupt the model call it waits on."""

    def __init__(self, chat: Chat, question: Message, message: Message, *, deadline: float) -> None:
        self.chat = chat
        self.question = question
        self.message = message
        self.track = AnswerTrack()
        self.interruption: Interruption | None = None
        self.followed_elsewhere = False
        self.saved_length = 0
        self._deadline = deadline
        self._wait: asyncio.Timeout | None = None

    @property
    def id(self) -> int:
        return self.message.id

    def interrupt(self, why: Interruption) -> None:
        """End the model call now (the first reason given is kept)."""
        if self.interruption is None:
            self.interruption = why
        if self._wait is not None:
            self._wait.reschedule(asyncio.get_running_loop().time())

    @asynccontextmanager
    async def interruptible(self) -> AsyncIterator[None]:
        """The scope of the model call: ``Interrupted`` once the answer is
        interrupted or its time is up, even mid-wait. One deadline for the whole
        call, which ``interrupt`` brings forward; the writer awaits nothing in it
        but the model, so the cancellation it causes lands on the model call."""
        if self.interruption is not None:
            raise Interrupted
        try:
            async with asyncio.timeout_at(self._deadline) as wait:
                self._wait = wait
                yield
        except TimeoutError:
            if not wait.expired():
                raise
            if self.interruption is None:
                self.interruption = Interruption.TIMED_OUT
            raise Interrupted from None
        finally:
            self._wait = None


class Interrupted(Exception):
    """The answer's model call was ended early: see ``Run.interruption``."""


# --- across processes ------------------------------------------------------------------


class AnswerRelay:
    """This process's answers being written, and the mirrors of other processes'."""

    def __init__(
        self, *, messages: MessageRepository, signals: AnswerSignals, progress_seconds: float
    ) -> None:
        self._messages = messages
        self._signals = signals
        self._progress_seconds = progress_seconds
        self.runs: dict[int, Run] = {}
        self._mirrors: dict[int, _Mirror] = {}
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(MAX_OUTGOING_SIGNALS)
        self._sender: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._signals.start(self._receive)
        self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def aclose(self) -> None:
        for mirror in list(self._mirrors.values()):
            mirror.close()
        await stop(*(task for task in (self._sender, self._saver) if task is not None))
        await self._signals.aclose()

    # --- the writer's side -----------------------------------------------------------

    def add(self, run: Run) -> None:
        self.runs[run.id] = run
        if self._saver is None or self._saver.done():
            self._saver = asyncio.get_running_loop().create_task(self._save_progress())

    def append(self, run: Run, text: str) -> None:
        start = run.track.length
        run.track.append(text)
        if run.followed_elsewhere:
            self._send_text(run.id, start, text)

    def ended(self, run: Run) -> None:
        """The run's end is stored and on its track: tell the mirrors, forget it."""
        self.runs.pop(run.id, None)
        self._send({"t": "end", "id": run.id})

    def stop(self, chat_id: int, ids: list[int]) -> None:
        """Stop these answers here, and tell every other process to."""
        self._stop_here(ids)
        if ids:
            self._send({"t": "stop", "chat": chat_id, "ids": ids})

    def _stop_here(self, ids: list[int]) -> None:
        for message_id in ids:
            run = self.runs.get(message_id)
            if run is not None:
                run.interrupt(Interruption.STOPPED)

    async def _save_progress(self) -> None:
        """Every second (``progress_seconds``) while answers are written here, store
        the text of those that grew, in one round trip: a crash loses at most that."""
        while self.runs:
            await asyncio.sleep(self._progress_seconds)
            grown = {
                run.id: run.track.text
                for run in list(self.runs.values())
                if run.track.length > run.saved_length and run.track.end is None
            }
            if not grown:
                continue
            try:
                await self._messages.save_progress(grown)
            except GeminiError as exc:
                log.warning("could not save the answers' progress: %s", exc.detail)
                continue
            for message_id, text in grown.items():
                if (run := self.runs.get(message_id)) is not None:
                    run.saved_length = len(text)

    # --- the reader's side in another process -------------------------------------------

    async def follow_elsewhere(self, message: Message, offset: int) -> AsyncIterator[AnswerEvent]:
        """Follow an answer another process writes (or wrote: a mirror finds out)."""
        mirror = self._mirrors.get(message.id)
        if mirror is None:
            mirror = _Mirror(self, message)
            self._mirrors[message.id] = mirror
            mirror.open()
        mirror.readers += 1
        try:
            async for event in mirror.track.follow(offset):
                yield event
        finally:
            mirror.readers -= 1
            if mirror.readers == 0 and self._mirrors.get(message.id) is mirror:
                del self._mirrors[message.id]
                mirror.close()

    async def settle(self, mirror: _Mirror) -> None:
        """Read the mirrored answer from the store; end the mirror if it is finished."""
        message = mirror.message
        stored = await self._messages.get(message.user_id, message.chat_id, message.id)
        if stored is None:
            mirror.track.finish(AnswerFailed(UpstreamError(BROKEN_OFF), None))
        elif stored.status.final and stored.owner is None:
            mirror.track.finish(end_of(stored))

    # --- signals -----------------------------------------------------------------------

    def _send(self, signal: dict[str, Any]) -> None:
        try:
            self._outgoing.put_nowait(json.dumps(signal, ensure_ascii=False))
        except asyncio.QueueFull:
            log.warning("too many signals waiting to be sent; dropped a %r", signal["t"])

    def _send_text(self, message_id: int, start: int, text: str) -> None:
        for at in range(0, len(text), SIGNAL_TEXT_CHARACTERS):
            piece = text[at : at + SIGNAL_TEXT_CHARACTERS]
            self._send({"t": "text", "id": message_id, "at": start + at, "s": piece})

    async def _send_all(self) -> None:
        """One sender per process, so its signals go out in the order made."""
        while True:
            signal = await self._outgoing.get()
            try:
                await self._signals.send(signal)
            except GeminiError as exc:
                log.warning("a signal could not be sent: %s", exc.detail)

    def _receive(self, raw: str) -> None:
        try:
            signal = json.loads(raw)
            kind = signal["t"]
            if kind == "stop":
                self._stop_here([int(i) for i in signal["ids"]])
            elif kind == "follow":
                self._followed(int(signal["id"]))
            elif kind == "text":
                mirror = self._mirrors.get(int(signal["id"]))
                if mirror is not None:
                    mirror.receive(int(signal["at"]), str(signal["s"]))
            elif kind == "end":
                mirror = self._mirrors.get(int(signal["id"]))
                if mirror is not None:
                    mirror.check_now()
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed signal: %.200r", raw)

    def _followed(self, message_id: int) -> None:
        """A process asks for an answer written here: send all of it so far, then
        every piece as it comes (both in order, through the one sender)."""
        run = self.runs.get(message_id)
        if run is None:
            return
        run.followed_elsewhere = True
        self._send_text(message_id, 0, run.track.text)

    def ask_to_follow(self, message_id: int) -> None:
        self._send({"t": "follow", "id": message_id})


class _Mirror:
    """Another process's answer, as this process's readers follow it."""

    def __init__(self, relay: AnswerRelay, message: Message) -> None:
        self.relay = relay
        self.message = message
        self.track = AnswerTrack()
        self.readers = 0
        self._checker: asyncio.Task[None] | None = None
        self._checked = asyncio.Event()
        self._asked_again = False

    def open(self) -> None:
        # Listening already (the relay's receiver is always on), so whatever the
        # owner sends in reply reaches this mirror.
        self.relay.ask_to_follow(self.message.id)
        self._checker = asyncio.get_running_loop().create_task(self._check())

    def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()

    def receive(self, at: int, text: str) -> None:
        have = self.track.length
        if at > have:
            # A gap: a piece was lost. Ask for the whole text again, once.
            if not self._asked_again:
                self._asked_again = True
                self.relay.ask_to_follow(self.message.id)
            return
        if at + len(text) > have:
            self._asked_again = False
            self.track.append(text[have - at :])

    def check_now(self) -> None:
        self._checked.set()

    async def _check(self) -> None:
        """Read the store when the owner says the answer ended, and now and then
        besides, until the answer is finished."""
        while self.track.end is None:
            try:
                await self.relay.settle(self)
            except GeminiError as exc:
                log.warning("could not read answer %s: %s", self.message.id, exc.detail)
            if self.track.end is not None:
                return
            try:
                async with asyncio.timeout(MIRROR_CHECK_SECONDS):
                    await self._checked.wait()
            except TimeoutError:
                pass
            self._checked.clear()
