"""A small HTTP/1.1 load generator: keep-alive connections on raw asyncio
streams (uvloop when installed), so the client costs far less CPU than the
server it measures. ``make bench`` uses it when wrk is not installed.

    python bench/loadgen.py URL --connections 64 --seconds 10 \\
        [--method POST] [--body '{"title": "bench"}'] [-H 'Name: value'] [--timeout 2]

Prints one JSON object. Like wrk, an answer outside 2xx/3xx is counted (and
its latency kept) as ``non_2xx_3xx``; a connection refused, broken or closed
mid-answer as ``socket_errors`` (``connect``, ``read``, ``write``), and the
connection is opened again; an answer slower than ``--timeout`` as
``timeout``, on a fresh connection. ``errors`` is their sum. Bodies are read
by Content-Length or chunked; ``Connection: close`` is honoured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from urllib.parse import urlsplit


class _Counts:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.non_2xx_3xx = 0
        self.connect = 0
        self.read = 0
        self.write = 0
        self.timeout = 0


class _Closed(Exception):
    """The server closed the connection (or sent what is not HTTP/1.1)."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole answer; its status, and whether the connection stays open."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise _Closed from exc
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise _Closed
    status = int(status_line[1])
    length: int | None = None
    chunked = False
    keep_alive = status_line[0] != b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = b"close" not in value.lower()
    try:
        if status < 200 or status in (204, 304):
            pass  # no body
        elif chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                await reader.readexactly(size + 2)
        elif length is not None:
            await reader.readexactly(length)
        else:  # the body runs to the end of the connection
            await reader.read()
            keep_alive = False
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise _Closed from exc
    return status, keep_alive


async def _connection(
    host: str, port: int, request: bytes, deadline: float, answer_seconds: float, counts: _Counts
) -> None:
    """One connection's loop, opened again whenever it breaks, until the deadline."""
    while time.perf_counter() < deadline:
        try:
            async with asyncio.timeout(answer_seconds):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            counts.connect += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    writer.write(request)
                    await writer.drain()
                except OSError:
                    counts.write += 1
                    break
                try:
                    async with asyncio.timeout(answer_seconds):
                        status, keep_alive = await _read_response(reader)
                except TimeoutError:
                    counts.timeout += 1
                    break
                except (_Closed, OSError, ValueError):
                    counts.read += 1
                    break
                counts.latencies.append(time.perf_counter() - started)
                counts.statuses[status] = counts.statuses.get(status, 0) + 1
                if not 200 <= status < 400:
                    counts.non_2xx_3xx += 1
                if not keep_alive:
                    break
        finally:
            writer.close()


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile, in milliseconds."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1] * 1000, 2)


def build_request(url: str, method: str, body: str | None, headers: list[str]) -> bytes:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    names = {header.partition(":")[0].strip().lower() for header in headers}
    lines = [f"{method.upper()} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    payload = (body or "").encode()
    if body is not None:
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
    return "\r\n".join([*lines, "", ""]).encode() + payload


async def run(
    url: str,
    connections: int,
    seconds: float,
    headers: list[str],
    *,
    method: str = "GET",
    body: str | None = None,
    answer_seconds: float = 2.0,
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(url, method, body, headers)
    counts = _Counts()
    started = time.perf_counter()
    deadline = started + seconds
    tasks = [
        asyncio.create_task(_connection(host, port, request, deadline, answer_seconds, counts))
        for _ in range(connections)
    ]
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    ordered = sorted(counts.latencies)
    socket_errors = counts.connect + counts.read + counts.write + counts.timeout
    return {
        "requests": len(ordered),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(ordered) / elapsed, 1),
        "p50_ms": _percentile(ordered, 0.50),
        "p99_ms": _percentile(ordered, 0.99),
        "errors": counts.non_2xx_3xx + socket_errors,
        "non_2xx_3xx": counts.non_2xx_3xx,
        "socket_errors": {
            "connect": counts.connect,
            "read": counts.read,
            "write": counts.write,
            "timeout": counts.timeout,
        },
        "statuses": {str(status): n for status, n in sorted(counts.statuses.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", help="the request body (JSON unless -H names a Content-Type)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds an answer may take")
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    coroutine = run(
        args.url,
        args.connections,
        args.seconds,
        args.header,
        method=args.method,
        body=args.body,
        answer_seconds=args.timeout,
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
