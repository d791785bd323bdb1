"""``EventStream`` at the ASGI level: events leave one by one, and the events'
iterator is closed the moment the response ends, however it ends."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import pytest
from litestar import Litestar, post
from litestar.exceptions import LitestarException

from web.events import EventStream, sse_event


class Recorder:
    def __init__(self) -> None:
        self.closed_with: str | None = None

    async def events(self, count: int, pause: float = 0.0) -> AsyncGenerator[bytes, None]:
        try:
            for n in range(count):
                yield sse_event("delta", Piece(text=str(n)))
                await asyncio.sleep(pause)
        except BaseException as exc:
            self.closed_with = type(exc).__name__
            raise
        self.closed_with = "end"


class Piece(msgspec.Struct):
    text: str


def app_for(recorder: Recorder, count: int, pause: float = 0.0) -> Litestar:
    @post("/stream", sync_to_thread=False)
    def stream() -> EventStream:
        return EventStream(recorder.events(count, pause))

    return Litestar([stream])


async def call(app: Litestar, send: Any, receive: Any) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]


class Connection:
    """The server's side: the request body, then ``http.disconnect`` once the
    response is over (as servers do) or when the client leaves."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_events_go_out_one_message_each_with_the_no_buffering_headers() -> None:
    recorder = Recorder()
    messages: list[dict[str, Any]] = []

    connection = Connection()

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            connection.gone.set()

    await call(app_for(recorder, 3), send, connection.receive)
    start = messages[0]
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    bodies = [m["body"] for m in messages[1:]]
    assert bodies == [
        b'event: delta\ndata: {"text":"0"}\n\n',
        b'event: delta\ndata: {"text":"1"}\n\n',
        b'event: delta\ndata: {"text":"2"}\n\n',
        b"",
    ]
    assert recorder.closed_with == "end"


async def test_a_failing_send_closes_the_events_at_once_not_at_garbage_collection() -> None:
    recorder = Recorder()
    body_messages = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal body_messages
        if message["type"] == "http.response.body":
            body_messages += 1
            if body_messages == 2:
                raise OSError("the client is gone")

    gc.disable()  # prove it is not the collector that closes them
    try:
        with pytest.raises(LitestarException, match="after response started"):
            await call(app_for(recorder, 5), send, Connection().receive)
        assert recorder.closed_with == "GeneratorExit"
    finally:
        gc.enable()


async def test_a_disconnect_cancels_the_events_where_they_wait() -> None:
    recorder = Recorder()
    connection = Connection()
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            connection.gone.set()  # the client leaves after the first event

    await asyncio.wait_for(call(app_for(recorder, 5, pause=10.0), send, connection.receive), 5)
    assert recorder.closed_with == "CancelledError"
    assert len(sent) == 1
