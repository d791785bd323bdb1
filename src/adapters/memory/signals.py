"""The ``AnswerSignals`` port within one event loop: every
``InMemoryAnswerSignals`` on one ``InMemorySignalHub`` plays a process of one
deployment. Across processes: ``adapters.postgres.signals`` and
``adapters.redis_signals``.

As there, a message reaches the receivers later, never inside ``send``; each
``send`` queues it for every started receiver at once, so all of them see all
messages in one order, the order they were sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from gemini_core.errors import UnavailableError
from gemini_core.ports import MAX_SIGNAL_BYTES

log = logging.getLogger(__name__)

SENT_KEPT = 10_000


class InMemorySignalHub:
    """What the processes of one deployment share: the channel."""

    def __init__(self) -> None:
        self.sent: deque[str] = deque(maxlen=SENT_KEPT)
        """The messages sent, in order (the newest ``SENT_KEPT``)."""
        self.down = False
        """While set, ``send`` fails with ``UnavailableError``, as it does when
        the server cannot be reached; a test may set it."""
        self._members: list[InMemoryAnswerSignals] = []

    def _join(self, member: InMemoryAnswerSignals) -> None:
        self._members.append(member)

    def _leave(self, member: InMemoryAnswerSignals) -> None:
        if member in self._members:
            self._members.remove(member)

    def _broadcast(self, message: str) -> None:
        loop = asyncio.get_running_loop()
        for member in self._members:
            loop.call_soon(member._deliver, message)
        self.sent.append(message)


class InMemoryAnswerSignals:
    def __init__(self, hub: InMemorySignalHub) -> None:
        self._hub = hub
        self._receive: Callable[[str], None] | None = None
        self._closed = False

    async def start(self, receive: Callable[[str], None]) -> None:
        if self._receive is not None:
            raise RuntimeError("the signals have already started")
        self._receive = receive
        self._hub._join(self)

    async def send(self, message: str) -> None:
        # The same limits as the real adapters, so no caller leans on more.
        if len(message.encode()) > MAX_SIGNAL_BYTES:
            raise ValueError(f"a signal takes at most {MAX_SIGNAL_BYTES} bytes")
        if "\x00" in message:
            raise ValueError("a signal cannot hold NUL (PostgreSQL's NOTIFY cannot carry it)")
        if self._closed:
            raise UnavailableError("The signals are closed.")
        if self._hub.down:
            raise UnavailableError("The signals are unavailable.")
        self._hub._broadcast(message)

    async def aclose(self) -> None:
        """Stop receiving (messages sent before and not yet delivered are
        dropped) and sending."""
        self._closed = True
        self._hub._leave(self)
        self._receive = None

    def _deliver(self, message: str) -> None:
        if self._receive is None:  # closed since the message was sent
            return
        try:
            self._receive(message)
        except Exception:
            log.exception("the receiver of answer signals failed")
