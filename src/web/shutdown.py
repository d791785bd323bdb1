"""Acting on a stop signal while connections are still open.

On SIGTERM (or SIGINT) granian stops accepting connections and waits for the
open ones to end; a worker still busy ``SHUTDOWN_TIMEOUT_SECONDS`` later is
killed. The ASGI lifespan's shutdown runs only once every connection has
closed, which is too late for a chat answer streaming for longer than that:
killed mid-stream, it would leave its client a cut connection and no stored
answer. So a worker learns of the signal itself, from its own handler put in
front of the server's, and can end such work while there is time to store it
and tell the client.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

__all__ = ["STOP_SIGNALS", "after_stop_signal"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@asynccontextmanager
async def after_stop_signal(action: Callable[[], None], *, seconds: float) -> AsyncIterator[None]:
    """While the context lasts, a stop signal runs ``action`` in this event loop
    ``seconds`` later (once, however many signals arrive).

    The server's handler still runs after ours. Only a signal the server
    catches is watched: under the default action the process dies at once,
    with nothing left to wait for, and a handler of ours would stop that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # Python delivers signals to the main thread alone
        return
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def start_timer() -> None:
        nonlocal timer
        if timer is None:
            timer = loop.call_later(seconds, action)

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def on_signal(number: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the loop is
        # doing; handing the work to the loop is the safe way in.
        loop.call_soon_threadsafe(start_timer)
        server_handler = previous[signal.Signals(number)]
        if callable(server_handler):
            server_handler(number, frame)

    watched = [number for number, handler in previous.items() if callable(handler)]
    for number in watched:
        signal.signal(number, on_signal)
    try:
        yield
    finally:
        for number in watched:
            if signal.getsignal(number) is on_signal:
                signal.signal(number, previous[number])
        if timer is not None:
            timer.cancel()
