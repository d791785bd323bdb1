"""A real HTTP/1.1 server on 127.0.0.1 that plays a model provider, for tests.

Each request is answered by the next planned ``Reply`` (or a default one):
pieces of text streamed as Server-Sent Events in chunked encoding, flushed
one by one, with optional pauses; an error status; a connection cut
mid-stream; or a stream held open until the client goes away. Gates order
events without timing them: ``threading.Event``s that hold the whole answer,
or one piece, until the test sets them. Every request is recorded (path,
headers, JSON body), and so is every client that left before its answer was
over, so a test can prove that a call was cancelled.

Subclasses say how a provider formats its events (``GeminiStandIn``,
``OpenAiStandIn``).
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GATE_LIMIT_SECONDS = 60.0
"""A gate still shut after this long cuts the connection, so a test that
never opens it fails (its client sees a broken answer) rather than hangs."""


@dataclass(frozen=True)
class Reply:
    pieces: Sequence[str] = ("Hello", ", world", "!")
    usage: tuple[int, int] | None = (11, 7)
    status: int = 200
    error: dict[str, Any] | None = None
    """The JSON body of an error status (the provider's usual one when None)."""
    headers: dict[str, str] = field(default_factory=dict)
    first_delay: float = 0.0
    """Seconds before the response's headers."""
    delay: float = 0.0
    """Seconds before each piece."""
    cut_after: int | None = None
    """Cut the connection after this many pieces, without ending the stream."""
    hold: bool = False
    """After the pieces, keep the stream open until the client leaves."""
    answer_gate: threading.Event | None = None
    """Send nothing, not even the status line, until this is set."""
    piece_gates: Mapping[int, threading.Event] = field(default_factory=dict)
    """Send piece ``n`` (counting from 0) only once its event is set."""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class StandIn:
    """Start with ``start()`` (or use as a context manager); ``url`` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.left_early = 0
        """Clients that closed their connection before their answer was over."""
        self.completed = 0
        self._plan: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- driving it -----------------------------------------------------------

    def plan(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order (then the default)."""
        with self._lock:
            self._plan.extend(replies)

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def wait_until(self, condition: Any, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, "the stand-in never saw that happen"
            await asyncio.sleep(0.01)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    # --- what a subclass provides ---------------------------------------------

    def events(self, reply: Reply, request: Recorded) -> Iterator[bytes | None]:
        """The SSE events of a streamed answer; ``None`` stands for one piece's
        slot, so pauses and cuts can be placed between pieces."""
        raise NotImplementedError

    def error_body(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def whole_answer(self, reply: Reply, request: Recorded) -> dict[str, Any] | None:
        """The JSON of a non-streamed answer, for routes that are not streamed."""
        return None

    def is_streamed(self, request: Recorded) -> bool:
        return True

    # --- the server -------------------------------------------------------------

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._plan.popleft() if self._plan else Reply()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Recorded(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                with standin._lock:
                    standin.requests.append(request)
                reply = standin._next_reply()
                if reply.first_delay and not self._pause(reply.first_delay):
                    return
                if reply.answer_gate and not self._await(reply.answer_gate):
                    return
                if reply.status != 200:
                    self._send_json(reply.status, reply.error or standin.error_body(reply), reply)
                    return
                if not standin.is_streamed(request):
                    self._send_json(200, standin.whole_answer(reply, request), reply)
                    return
                self._stream(reply, request)

            def _send_json(self, status: int, body: Any, reply: Reply) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply, request: Recorded) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.flush()
                pieces_sent = 0
                for event in standin.events(reply, request):
                    if event is None:  # a piece's slot
                        if reply.cut_after is not None and pieces_sent >= reply.cut_after:
                            self._cut()
                            return
                        if reply.delay and not self._pause(reply.delay):
                            return
                        gate = reply.piece_gates.get(pieces_sent)
                        if gate and not self._await(gate):
                            return
                        pieces_sent += 1
                        continue
                    if not self._chunk(event):
                        return
                if reply.cut_after is not None:
                    self._cut()
                    return
                if reply.hold:
                    while self._pause(0.05):
                        pass
                    return
                self._chunk(b"")
                with standin._lock:
                    standin.completed += 1

            def _chunk(self, data: bytes) -> bool:
                try:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                except OSError:
                    self._left()
                    return False
                return True

            def _cut(self) -> None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def _pause(self, seconds: float) -> bool:
                """Wait, watching the connection; False when the client left."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    if self._gone(min(left, 0.02)):
                        return False
                return True

            def _await(self, gate: threading.Event) -> bool:
                """Wait for the test to open the gate, watching the connection;
                False when the client left, or when the gate stayed shut so
                long that the connection was cut."""
                deadline = time.monotonic() + GATE_LIMIT_SECONDS
                while not gate.is_set():
                    if time.monotonic() > deadline:
                        self._cut()
                        return False
                    if self._gone(0.02):
                        return False
                return True

            def _gone(self, seconds: float) -> bool:
                """Whether the client left, watching for up to ``seconds``."""
                readable, _, _ = select.select([self.connection], [], [], seconds)
                if not readable:
                    return False
                try:
                    gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    self._left()
                return gone

            def _left(self) -> None:
                self.close_connection = True
                with standin._lock:
                    standin.left_early += 1

        return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is expected
            super().handle_error(request, client_address)


def sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
