"""Starting the service in tests: settings for an in-process app, and the real
``gemini-backend serve`` process, as `make run` starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from web.settings import Settings, load_settings

R = TypeVar("R")

SRC = Path(__file__).resolve().parents[2] / "src"


def settings_for(data_dir: Path, database_url: str | None, **env: str) -> Settings:
    environ = {"ENVIRONMENT": "test", "DATA_DIR": str(data_dir), **env}
    if database_url is not None:
        environ["DATABASE_URL"] = database_url
    return load_settings(environ=environ, env_file=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_server(
    cwd: Path, stderr_to: Path | None = None, /, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gemini-backend serve`` as `make run` starts it, ready on /health.

    Its log (stderr) goes to ``stderr_to`` when given, for a test to read;
    positional, so that no environment variable's name can collide with it."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DATABASE_"))}
    environ.update(env, PYTHONPATH=str(SRC), PORT=str(port))
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(stderr_to.open("wb")) if stderr_to else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve"],
            cwd=cwd,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # a group of its own, so its workers go with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "no answer on /health within 90 s"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield process, base
    finally:
        if process.poll() is None:
            # The server and granian's workers: killing the parent alone orphans them.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def until(get: Callable[[], R], done: Callable[[R], bool], *, within: float = 15.0) -> R:
    """``get()`` again every 0.1 s until ``done`` says yes (or ``within`` seconds
    pass: a failure); what it got last. For what may answer from a report up to
    a second old, such as /health."""
    deadline = time.monotonic() + within
    while not done(got := get()):
        assert time.monotonic() < deadline, f"still not there after {within} s: {got!r}"
        time.sleep(0.1)
    return got
