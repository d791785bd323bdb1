"""Server-Sent Events responses that are never buffered and never outlive
their client.

``EventStream`` sends each event the moment its iterator yields it (granian
flushes every body message; ``X-Accel-Buffering: no`` tells nginx-like
proxies not to hold it, ``Cache-Control: no-cache`` everyone else). While
streaming, Litestar watches the connection and cancels the task reading the
iterator when the client goes away; on top of that, the iterator is closed as
soon as the response ends, however it ends, so whatever it holds (a reader's
place in an answer) is let go at once rather than when the garbage collector
runs. The answer itself belongs to the server and goes on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.status_codes import HTTP_200_OK
from litestar.types import Receive, Send, TypeEncodersMap

EVENT_STREAM = "text/event-stream"

__all__ = ["EVENT_STREAM", "EventStream", "sse_event", "wants_events"]


def sse_event(name: str, data: msgspec.Struct, *, event_id: str | None = None) -> bytes:
    # JSON never holds a raw line break, so one data line carries the event.
    head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
    return head + b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


class _ClosingStreamingResponse(ASGIStreamingResponse):
    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        try:
            await super().send_body(send, receive)
        finally:
            # However the response ended (finished, client gone, send failed,
            # server stopping), close the events now rather than whenever the
            # garbage collector finds them.
            # A task of its own, so a cancellation here cannot cut it short.
            aclose = getattr(self.iterator, "aclose", None)
            if aclose is not None:
                await asyncio.shield(asyncio.ensure_future(aclose()))


class EventStream(Stream):
    """``text/event-stream``, sent event by event: nothing buffers it (proxies
    are told so with ``X-Accel-Buffering: no``), and its events are closed as
    soon as the response ends."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        super().__init__(
            events,
            media_type=EVENT_STREAM,
            status_code=HTTP_200_OK,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: Any = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        return _ClosingStreamingResponse(
            background=self.background or background,
            content_length=0,
            cookies=self.cookies if cookies is None else itertools.chain(self.cookies, cookies),
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers={**headers, **self.headers} if headers is not None else self.headers,
            is_head_response=is_head_response,
            iterator=self.events,
            media_type=EVENT_STREAM,
            status_code=self.status_code or status_code,
        )


def wants_events(request: Request[Any, Any, Any]) -> bool:
    return request.accept.best_match(["application/json", EVENT_STREAM]) == EVENT_STREAM
