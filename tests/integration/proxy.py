"""A TCP proxy that a test can take down and bring back, to see what the
service does when its database (``DatabaseProxy``) or Redis (``TcpProxy``)
goes away."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

T = TypeVar("T")
Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _upstream_opener(url: str) -> Opener:
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    if host.startswith("/"):
        path = f"{host}/.s.PGSQL.{port}"
        return lambda: asyncio.open_unix_connection(path)
    return lambda: asyncio.open_connection(host, port)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream server, on its own thread."""

    def __init__(self, open_upstream: Opener) -> None:
        self._open_upstream = open_upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    @classmethod
    def to(cls, host: str, port: int) -> TcpProxy:
        return cls(lambda: asyncio.open_connection(host, port))

    def _run(self, coro: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=10)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._run(self._listen())

    def stop(self) -> None:
        """Refuse new connections and cut every open one, like a stopped server."""
        self._run(self._close())

    def shutdown(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()
        if server is not None:
            await server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await self._open_upstream()
        except OSError:
            client_w.close()
            return
        self._pipes.update((client_w, upstream_w))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))
        self._pipes.difference_update((client_w, upstream_w))


class DatabaseProxy(TcpProxy):
    """Forwards 127.0.0.1:<port> to the database of ``url``."""

    def __init__(self, url: str) -> None:
        super().__init__(_upstream_opener(url))
        self._dbparams = conninfo_to_dict(url)

    @property
    def url(self) -> str:
        """A ``postgresql://`` URL to the same database through the proxy."""
        user = quote(str(self._dbparams.get("user") or "postgres"), safe="")
        password = self._dbparams.get("password")
        auth = f"{user}:{quote(str(password), safe='')}" if password else user
        dbname = quote(str(self._dbparams.get("dbname") or "postgres"), safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
