"""Connections of their own, outside the pool, for sessions that must last as
long as the process: the answer owner's advisory lock and the signals' LISTEN.

Both ends watch for a lost peer. The client's keepalives make a dead server
or network break the connection here within about 25 seconds, rather than
after the kernel's two hours; the server's make PostgreSQL end the session of
a host that vanished just as soon, which lets go of its advisory lock (so its
answers count as orphaned) and of its place in the notification queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg.rows import TupleRow

Connection = psycopg.AsyncConnection[TupleRow]

# libpq's connect_timeout is in whole seconds.
CONNECT_TIMEOUT = 5
# Both ends: idle 10 s, then 3 probes 5 s apart, so a lost peer is noticed
# within 25 s. (Over a Unix socket PostgreSQL ignores them.)
# No tcp_user_timeout: it bounds data left unacknowledged, and the server
# sends these sessions nothing but the odd notification.
_SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
# After a lost connection, how long to wait before each new attempt.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


async def connect(url: str, *, name: str) -> Connection:
    """A fresh autocommit connection, with keepalives at both ends; ``name``
    shows in ``pg_stat_activity`` unless the URL names the application."""
    conn = await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        fallback_application_name=name,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )
    try:
        await conn.execute(_SERVER_KEEPALIVES)
    except BaseException:
        await conn.close()
        raise
    return conn


async def close_quietly(conn: Connection | None) -> None:
    """Close ``conn``, whatever state it is in."""
    if conn is not None:
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()


def describe(error: BaseException) -> str:
    """The gist of a driver's error, on one line (libpq's run to several)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def retry_delays() -> Iterator[float]:
    """The pauses between attempts to reconnect: none before the first (the
    server may be fine and only this session gone), then backing off."""
    yield 0.0
    delay = RETRY_FIRST_SECONDS
    while True:
        yield delay
        delay = min(2 * delay, RETRY_MAX_SECONDS)
