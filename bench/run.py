"""``make bench``: one server worker on this machine, measured from outside.

Starts ``gemini-backend serve`` with one worker (on DATABASE_URL when set,
else the embedded PostgreSQL in a temporary directory), signs in as the
bootstrap admin, then loads a few routes with bench/loadgen.py in its own
process and prints requests per second and latencies, plus the worker's
resident memory. Numbers depend on the machine; compare runs on one machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"email": "bench@example.com", "password": "a bench passphrase"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    total = 0
    children = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    own = subprocess.run(
        ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for value in children + own:
        total += int(value)
    return round(total / 1024, 1)


def load(url: str, seconds: float, connections: int, headers: list[str]) -> dict[str, float]:
    command = [sys.executable, str(ROOT / "bench" / "loadgen.py"), url,
               "--seconds", str(seconds), "--connections", str(connections)]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "64"))
    data_dir = Path(tempfile.mkdtemp(prefix="gmbench"))
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve"], cwd=data_dir, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        token = httpx.post(f"{base}/auth/login", json=ADMIN).json()["access_token"]
        auth = [f"Authorization: Bearer {token}"]
        routes = {
            "GET /health (no auth, database ping)": ("/health", []),
            "GET /auth/me (authenticated: one query)": ("/auth/me", auth),
        }
        if httpx.get(f"{base}/chats", headers={"Authorization": f"Bearer {token}"}).status_code == 200:
            routes["GET /chats (authenticated list)"] = ("/chats?limit=20", auth)
        print(f"one worker, {connections} connections, {seconds:.0f} s per route")
        for name, (path, headers) in routes.items():
            load(base + path, 2, connections, headers)  # warm up
            result = load(base + path, seconds, connections, headers)
            print(f"{name:44} {result['requests_per_second']:>9.1f} req/s  "
                  f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                  f"errors {int(result['errors'])}")
        print(f"server resident memory (parent + worker): {rss_mb(server.pid)} MB")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
