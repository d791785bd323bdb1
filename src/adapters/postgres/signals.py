"""The ``AnswerSignals`` port on PostgreSQL's LISTEN/NOTIFY, for deployments
without Redis.

Each process keeps two connections of its own, outside the pool: one LISTENs
for as long as the process lives, and a task hands each notification to the
receiver; the other sends, one ``pg_notify`` at a time. PostgreSQL delivers a
session's notifications in the order their transactions committed, and each
``pg_notify`` here commits before the next is sent, so every process sees one
process's messages in the order it sent them. (Autocommit also keeps the
server from folding identical messages into one, which it does only within a
transaction.)

A listening connection that breaks is replaced, backing off while the server
cannot be reached; what was sent meanwhile is lost to this process, as the
port allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from adapters.postgres._dedicated import (
    Connection,
    close_quietly,
    connect,
    describe,
    retry_delays,
)
from gemini_core.errors import UnavailableError
from gemini_core.ports import MAX_SIGNAL_BYTES

log = logging.getLogger(__name__)

UNAVAILABLE = "The database is unavailable; the signal was not sent."
CLOSED = "The signals are closed."
_NOTIFY = "SELECT pg_notify(%(channel)s, %(message)s)"
# The server ended an idle session (an administrator, a restart, its idle
# timeout) before reading what was sent on it: nothing went out, so sending it
# again on a fresh connection cannot deliver it twice.
_SESSION_ENDED = (pg_errors.AdminShutdown, pg_errors.IdleSessionTimeout)
_APPLICATION_NAME = "gemini-signals"


class PostgresAnswerSignals:
    def __init__(
        self, url: str, channel: str = "gemini_answers", *, timeout_seconds: float = 5.0
    ) -> None:
        self._url = url
        self._channel = channel
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._timeout_seconds = timeout_seconds
        self._listening: Connection | None = None
        self._relay: asyncio.Task[None] | None = None
        self._sending: Connection | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def start(self, receive: Callable[[str], None]) -> None:
        """LISTEN, then relay; ``UnavailableError`` if the database cannot be reached."""
        if self._relay is not None:
            raise RuntimeError("the signals have already started")
        try:
            self._listening = await self._listen_afresh()
        except (psycopg.Error, OSError) as exc:
            raise UnavailableError("The database is unavailable.") from exc
        self._relay = asyncio.create_task(self._run(receive), name="gemini-signals-listen")

    async def send(self, message: str) -> None:
        if len(message.encode()) > MAX_SIGNAL_BYTES:
            raise ValueError(f"a signal takes at most {MAX_SIGNAL_BYTES} bytes")
        if "\x00" in message:
            raise ValueError("a signal cannot hold NUL (PostgreSQL's NOTIFY cannot carry it)")
        async with self._send_lock:
            if self._closed:
                raise UnavailableError(CLOSED)
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    await self._notify(message)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                conn, self._sending = self._sending, None
                await close_quietly(conn)
                raise UnavailableError(UNAVAILABLE) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
            self._relay = None
        listening, self._listening = self._listening, None
        await close_quietly(listening)
        async with self._send_lock:
            sending, self._sending = self._sending, None
            await close_quietly(sending)

    async def _notify(self, message: str) -> None:
        params = {"channel": self._channel, "message": message}
        for last_try in (False, True):
            if self._sending is None or self._sending.closed:
                await close_quietly(self._sending)
                self._sending = await connect(self._url, name=_APPLICATION_NAME)
            try:
                await self._sending.execute(_NOTIFY, params)
                return
            except _SESSION_ENDED:
                conn, self._sending = self._sending, None
                await close_quietly(conn)
                if last_try:
                    raise

    async def _listen_afresh(self) -> Connection:
        conn = await connect(self._url, name=_APPLICATION_NAME)
        try:
            await conn.execute(self._listen)
        except BaseException:
            await close_quietly(conn)
            raise
        return conn

    async def _run(self, receive: Callable[[str], None]) -> None:
        while True:
            conn = self._listening
            assert conn is not None
            try:
                # Notifications that came between LISTEN and this loop were
                # kept by psycopg, and come first.
                async for notify in conn.notifies():
                    _deliver(receive, notify.payload)
            except psycopg.Error as exc:
                log.warning(
                    "lost the connection listening for answer signals (%s); listening again",
                    describe(exc),
                )
            self._listening = None
            await close_quietly(conn)
            self._listening = await self._listen_again()
            log.info("listening for answer signals again")

    async def _listen_again(self) -> Connection:
        reported = False
        for delay in retry_delays():
            await asyncio.sleep(delay)
            try:
                return await self._listen_afresh()
            except (psycopg.Error, OSError) as exc:
                if not reported:
                    log.warning(
                        "cannot reach the database to listen for answer signals (%s); retrying",
                        describe(exc),
                    )
                    reported = True
        raise AssertionError("unreachable: retry_delays never ends")


def _deliver(receive: Callable[[str], None], message: str) -> None:
    # One receiver's failure must not stop the signals for the whole process.
    try:
        receive(message)
    except Exception:
        log.exception("the receiver of answer signals failed")
