"""``make bench-streams``: many answers streaming at once through one worker.

Starts a stand-in model (an OpenAI-compatible ``/v1/chat/completions`` on
asyncio, in a process of its own) that streams each answer in pieces 10 ms
apart, each piece holding the time it left the model; then ``gemini-backend
serve`` with one worker (on DATABASE_URL when set, else the embedded
PostgreSQL) and sends ``BENCH_ANSWERS`` (100) messages at once, each with an
SSE reader (raw sockets, so the readers cost the two cores little). Done in
``BENCH_WAVES`` (3) waves; prints, per wave, the delay from a piece leaving
the model to its reaching the reader (median, p99), whether every answer came
whole, and the worker's resident memory after the wave: it must stay flat.

Numbers depend on the machine; compare runs on one machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import ADMIN, backend, children, free_port, rss_mb  # noqa: E402

ANSWERS = int(os.environ.get("BENCH_ANSWERS", "100"))
PIECES = int(os.environ.get("BENCH_PIECES", "200"))
GAP_SECONDS = float(os.environ.get("BENCH_GAP_SECONDS", "0.01"))
WAVES = int(os.environ.get("BENCH_WAVES", "3"))
STAMP = re.compile(r"\[(\d+)\]")

# --- the stand-in model (run as ``streams.py model PORT``) ------------------------------


async def model_server(port: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for _ in range(PIECES):
                    await asyncio.sleep(GAP_SECONDS)
                    piece = f"[{time.time_ns()}]"
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    send(writer, b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    await writer.drain()
                done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                send(writer, b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def send(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the readers -----------------------------------------------------------------------------


async def one_answer(port: int, token: str, chat_id: int) -> tuple[list[float], bool]:
    """Send a message and read its events; the delays (ms) of every piece, and
    whether the answer arrived whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"content": "Stream, please"}).encode()
    writer.write(
        f"POST /chats/{chat_id}/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {token}\r\naccept: text/event-stream\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    delays: list[float] = []
    pieces = 0
    whole = False
    while line := await reader.readline():
        if line.startswith(b'data: {"text"'):
            now = time.time_ns()
            for stamp in STAMP.findall(json.loads(line[6:])["text"]):
                delays.append((now - int(stamp)) / 1e6)
                pieces += 1
        elif line.startswith(b"event: done"):
            whole = pieces == PIECES
            break
        elif line.startswith(b"event: error"):
            break
    writer.close()
    return delays, whole


def worker_rss_mb(server_pid: int) -> float:
    return round(sum(rss_mb(worker) for worker in children(server_pid)), 1)


async def waves(port: int, server_pid: int) -> list[dict[str, object]]:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post("/auth/login", json=ADMIN)
        token = login.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        async def new_chats() -> list[int]:
            made = [
                await client.post("/chats", json={"title": "c"}, headers=auth)
                for _ in range(ANSWERS)
            ]
            return [response.json()["id"] for response in made]

        results = []
        for wave in range(WAVES):
            # New chats each wave, so every wave sends the same history: what stays
            # is the worker's, not a longer context (which grows until
            # max_history_messages, then stops).
            chats = await new_chats()
            results.append(await one_wave(wave + 1, port, server_pid, token, chats))
    return results


async def one_wave(
    wave: int, port: int, server_pid: int, token: str, chats: list[int]
) -> dict[str, object]:
    started = time.monotonic()
    answers = await asyncio.gather(*(one_answer(port, token, c) for c in chats))
    delays = sorted(d for found, _ in answers for d in found)
    result: dict[str, object] = {
        "wave": wave,
        "answers whole": sum(whole for _, whole in answers),
        "pieces": len(delays),
        "delay p50 ms": round(statistics.median(delays), 2),
        "delay p99 ms": round(delays[int(len(delays) * 0.99)], 2),
        "seconds": round(time.monotonic() - started, 1),
        "worker rss MB": worker_rss_mb(server_pid),
    }
    print(json.dumps(result), flush=True)
    return result


def summary(results: list[dict[str, object]]) -> str:
    """The figures the README quotes: the median of the waves' medians against
    the 5 ms target, and the worker's memory after the first wave, once warm (a
    fifth of the way), and at the end: flat means the last two agree."""
    medians = sorted(float(r["delay p50 ms"]) for r in results)  # type: ignore[arg-type]
    rss = [float(r["worker rss MB"]) for r in results]  # type: ignore[arg-type]
    p50 = statistics.median(medians)
    warm = len(rss) // 5
    whole = all(r["answers whole"] == ANSWERS for r in results)
    return (
        f"delay p50 across waves: {p50:.2f} ms (target < 5: {'met' if p50 < 5 else 'NOT met'}); "
        f"rss after wave 1: {rss[0]} MB, after wave {warm + 1}: {rss[warm]} MB, "
        f"after wave {len(rss)}: {rss[-1]} MB (highest {max(rss)}); "
        f"every answer whole: {whole}"
    )


def main() -> None:
    if sys.argv[1:2] == ["model"]:
        asyncio.run(model_server(int(sys.argv[2])))
        return
    model_port = free_port()
    model = subprocess.Popen([sys.executable, __file__, "model", str(model_port)])
    env = {
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "OPENAI_MODEL": "bench",
        "MAX_RUNNING_ANSWERS_PER_USER": str(ANSWERS),
    }
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gmstreams") as data_dir,
            backend(Path(data_dir), **env) as (server, base),
        ):
            print(
                f"{ANSWERS} answers at once, {PIECES} pieces {GAP_SECONDS * 1000:g} ms apart, "
                f"one reader each, {WAVES} waves; {os.cpu_count()} cores",
                flush=True,
            )
            port = int(base.rpartition(":")[2])
            print(summary(asyncio.run(waves(port, server.pid))), flush=True)
    finally:
        model.terminate()
        model.wait(timeout=10)


if __name__ == "__main__":
    main()
