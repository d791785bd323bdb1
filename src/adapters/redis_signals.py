"""The ``AnswerSignals`` port on Redis pub/sub, for deployments with Redis.

Each process keeps a client of its own: one connection SUBSCRIBEs to the
deployment's channel for as long as the process lives, and a task hands each
message to the receiver; PUBLISHes go one at a time. Redis pushes a channel's
messages to each subscriber in the order it executed the PUBLISHes, and each
publish here is answered before the next is sent, so every process sees one
process's messages in the order it sent them.

The client never retries on its own. A retried PUBLISH whose answer was lost
could reach everyone twice; and a subscription that breaks is replaced here,
with a log line and backing off while Redis cannot be reached, rather than
inside redis-py. What was published meanwhile is lost to this process, as
the port allows. Keepalives notice a lost Redis (or network) within about 25
seconds instead of never: the subscriber waits on its socket without end.

Redis disconnects a subscriber that falls far behind (``client-output-buffer-
limit pubsub``); the receiver is called straight from the reading task, so
only a stalled event loop could.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from adapters.redis import REDIS_ERRORS, UNAVAILABLE
from gemini_core.errors import UnavailableError
from gemini_core.ports import MAX_SIGNAL_BYTES

__all__ = ["RedisAnswerSignals"]

log = logging.getLogger(__name__)

CLOSED = "The signals are closed."

# After a lost subscription, how long to wait before each new attempt.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


def _keepalive_options() -> dict[int, int]:
    """Idle 10 s, then 3 probes 5 s apart, where the platform lets us say so."""
    wanted = {"TCP_KEEPIDLE": 10, "TCP_KEEPALIVE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


class RedisAnswerSignals:
    """``client_name`` names this process's connections in ``CLIENT LIST``."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        client_name: str = "gemini-signals",
        timeout_seconds: float = 5.0,
    ) -> None:
        self._channel = channel
        self._timeout_seconds = timeout_seconds
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            socket_keepalive=True,
            socket_keepalive_options=_keepalive_options(),
            retry=Retry(NoBackoff(), 0),
            client_name=client_name,
            # RESP2: over RESP3 (redis-py 8's default) the pool no longer
            # checks an idle connection before lending it, so a publish after
            # Redis closed one fails instead of going out on a fresh one.
            protocol=2,
        )
        self._pubsub: PubSub | None = None
        self._relay: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def start(self, receive: Callable[[str], None]) -> None:
        """SUBSCRIBE, and relay once Redis has confirmed it; ``UnavailableError``
        if Redis cannot be reached."""
        if self._relay is not None:
            raise RuntimeError("the signals have already started")
        try:
            self._pubsub = await self._subscribe()
        except REDIS_ERRORS as exc:
            raise UnavailableError(UNAVAILABLE) from exc
        self._relay = asyncio.create_task(self._run(receive), name="gemini-signals-subscribe")

    async def send(self, message: str) -> None:
        if len(message.encode()) > MAX_SIGNAL_BYTES:
            raise ValueError(f"a signal takes at most {MAX_SIGNAL_BYTES} bytes")
        if "\x00" in message:
            raise ValueError("a signal cannot hold NUL (PostgreSQL's NOTIFY cannot carry it)")
        async with self._send_lock:
            if self._closed:
                raise UnavailableError(CLOSED)
            try:
                await self._client.publish(self._channel, message)
            except REDIS_ERRORS as exc:
                raise UnavailableError(UNAVAILABLE) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
            self._relay = None
        pubsub, self._pubsub = self._pubsub, None
        await _close_quietly(pubsub)
        async with self._send_lock:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.aclose(close_connection_pool=True)

    async def _subscribe(self) -> PubSub:
        """A pub/sub connection whose SUBSCRIBE Redis has answered: from then on
        it carries every message published to the channel."""
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await pubsub.subscribe(self._channel)
                while True:
                    reply: Any = await pubsub.get_message(timeout=None)
                    if reply is not None and reply["type"] == "subscribe":
                        return pubsub
        except BaseException:
            await _close_quietly(pubsub)
            raise

    async def _run(self, receive: Callable[[str], None]) -> None:
        while True:
            pubsub = self._pubsub
            assert pubsub is not None
            try:
                reply: Any
                async for reply in pubsub.listen():
                    if reply["type"] == "message":
                        _deliver(receive, reply["data"])
                error = "no longer subscribed"
            except REDIS_ERRORS as exc:
                error = str(exc).strip() or type(exc).__name__
            log.warning(
                "lost the Redis subscription for answer signals (%s); subscribing again", error
            )
            self._pubsub = None
            await _close_quietly(pubsub)
            self._pubsub = await self._subscribe_again()
            log.info("subscribed to answer signals again")

    async def _subscribe_again(self) -> PubSub:
        reported = False
        for delay in _retry_delays():
            await asyncio.sleep(delay)
            try:
                return await self._subscribe()
            except REDIS_ERRORS as exc:
                if not reported:
                    log.warning(
                        "cannot reach Redis to subscribe to answer signals (%s); retrying",
                        str(exc).strip() or type(exc).__name__,
                    )
                    reported = True
        raise AssertionError("unreachable: _retry_delays never ends")


def _deliver(receive: Callable[[str], None], data: bytes) -> None:
    try:
        message = data.decode()
    except UnicodeDecodeError:
        log.warning("ignored an answer signal that is not UTF-8")
        return
    # One receiver's failure must not stop the signals for the whole process.
    try:
        receive(message)
    except Exception:
        log.exception("the receiver of answer signals failed")


async def _close_quietly(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(*REDIS_ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _retry_delays() -> Iterator[float]:
    """None before the first attempt (Redis may be fine and only this
    connection gone), then backing off."""
    yield 0.0
    delay = RETRY_FIRST_SECONDS
    while True:
        yield delay
        delay = min(2 * delay, RETRY_MAX_SECONDS)
