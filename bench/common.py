"""What the benchmarks share: the PostgreSQL server to use, a fresh database on
it, ``gemini-backend serve`` started on that database and stopped again, and
small measures (free ports, resident memory, timed phases).

bench/ is not a package: each script puts this folder on ``sys.path`` and
imports ``common``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from adapters.postgres.embedded import EmbeddedPostgres

# The bootstrap admin every benchmark's server creates (ADMIN_EMAIL/ADMIN_PASSWORD).
ADMIN = {"email": "bench@example.com", "password": "a bench passphrase"}
KEEP = os.environ.get("BENCH_KEEP") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """A process's resident memory, in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(found[1]) / 1024, 1) if found else 0.0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (granian's workers)."""
    listed = subprocess.run(  # noqa: S603
        ["ps", "-o", "pid=", "--ppid", str(pid)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [int(value) for value in listed]


@contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Records how long the block took, in seconds, as ``phases[name]``."""
    started = time.monotonic()
    yield
    phases[name] = round(time.monotonic() - started, 1)


@contextmanager
def postgres_server() -> Iterator[str]:
    """DATABASE_URL's server, else an embedded PostgreSQL for as long as the block lasts."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="gmbenchpg") as directory:
        embedded = EmbeddedPostgres(Path(directory))
        try:
            yield embedded.start()
        finally:
            embedded.stop()


@contextmanager
def fresh_database(server_url: str, name: str) -> Iterator[str]:
    """A database ``name`` made afresh on that server (its URL), dropped at the
    end unless BENCH_KEEP=1."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        if KEEP:
            print(f"kept: {url}", flush=True)
        else:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def wait_healthy(server: subprocess.Popen[bytes], base: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@contextmanager
def backend(data_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gemini-backend serve`` with one worker, the rate limits off and the
    bootstrap ADMIN, run in ``data_dir`` with ``env`` on top of this process's
    environment, quiet; its process and base URL once /health answers. Stopped
    (SIGTERM, then killed after 30 s) at the end."""
    port = free_port()
    environ = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        **env,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve"],
        cwd=data_dir,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base)
        yield server, base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
