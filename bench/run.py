"""``make bench``: the API's throughput against the framework's floor, measured from outside.

In one run it starts two servers side by side, both served by granian with the
same options:

- the floor (bench/floor.py): a bare Litestar + msgspec app whose one GET route
  returns a constant small JSON body, the most any route here could reach;
- ``gemini-backend serve`` deployed as a new user would in production:
  ``ENVIRONMENT=production`` with its defaults (JSON logs at INFO, the access
  log among them, written to app.log in a temporary LOG_DIR; no /metrics, no
  docs), a random 64-character SECRET_KEY, ``ALLOWED_HOSTS=127.0.0.1``, the
  offline model chosen on purpose, a mail server named (none is used), and the
  rate limits off (100 requests an hour would stop the run). Other settings in
  the environment are ignored, so runs compare. The database is a fresh one,
  ``gmbench_run``, on the server DATABASE_URL points at (dropped at the end),
  else an embedded PostgreSQL in a temporary directory (production refuses to
  start one itself). The bootstrap admin (ADMIN_EMAIL/ADMIN_PASSWORD) gets 50
  chats, and its access token authenticates the requests.

Each route is warmed up for 2 s, then loaded for BENCH_SECONDS (10) with
``wrk -t2 -cN --latency`` when wrk is installed, else with bench/loadgen.py in a
process of its own (BENCH_TOOL=wrk|loadgen forces one):

- one worker each, BENCH_CONNECTIONS (64) connections: floor ``GET /``,
  ``GET /health``, ``GET /auth/me``, ``GET /chats?limit=20``, ``POST /chats``
  (measured last, after the 256-connection runs, so both one-worker lists read
  the same 50 chats; the two-worker list reads more, but a page is a keyset
  range scan of the list's index, so its cost follows the page, not the chats);
- one worker each, 256 connections: the floor and ``GET /chats?limit=20``,
  each also as a share of its own rate at 64 (the target: at least 90 %);
- two workers each (both servers restarted), 64 connections: the floor and
  ``GET /chats?limit=20``.

A table per configuration gives each route's requests per second, its share of
the floor's in the same configuration, p50, p99 and errors (answers outside
2xx/3xx, and socket errors), then each server's resident memory (parent +
workers). Every measurement is also printed as one JSON line (starting with
``{``) for scripts. BENCH_QUICK=1 is a smoke run: 1 s a route after 1 s of
warm-up, and no two-worker part. Every process and temporary directory is
removed at the end, on Ctrl-C or on a failure too.

Numbers depend on the machine, and the load tool shares its cores with the
servers; compare runs on one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ADMIN = {"email": "bench@example.com", "password": "a bench passphrase"}

QUICK = os.environ.get("BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")
SECONDS = max(1, round(float(os.environ.get("BENCH_SECONDS", "1" if QUICK else "10"))))
WARMUP_SECONDS = 1 if QUICK else 2
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
WIDE_CONNECTIONS = 256
WIDE_TARGET_PCT = 90
CHATS = 50
DATABASE = "gmbench_run"  # made afresh on DATABASE_URL's server
SECRET_KEY = secrets.token_urlsafe(48)  # 64 characters


@dataclass(frozen=True)
class Route:
    name: str
    server: str  # "floor" or "app"
    path: str
    method: str = "GET"
    auth: bool = False
    body: str | None = None


FLOOR = Route("floor GET /", "floor", "/")
HEALTH = Route("GET /health", "app", "/health")
ME = Route("GET /auth/me", "app", "/auth/me", auth=True)
LIST = Route("GET /chats?limit=20", "app", "/chats?limit=20", auth=True)
CREATE = Route("POST /chats", "app", "/chats", "POST", auth=True, body='{"title":"bench"}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """The resident memory of a process and its children (granian's workers), in MB."""
    total = 0
    children = subprocess.run(  # noqa: S603
        ["ps", "-o", "rss=", "--ppid", str(pid)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    own = subprocess.run(  # noqa: S603
        ["ps", "-o", "rss=", "-p", str(pid)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for value in children + own:
        total += int(value)
    return round(total / 1024, 1)


# --- the servers -----------------------------------------------------------------------------


class Server:
    """A server in a process group of its own, its output in a file."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.output = cwd / f"{name}.out"
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_up(self, url: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.output.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit(f"{self.name} did not start:\n" + "\n".join(tail))
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=40)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # any worker left behind
        self.process.wait()


def start_floor(stack: contextlib.ExitStack, scratch: Path, workers: int) -> tuple[Server, str]:
    port = free_port()
    command = [sys.executable, str(BENCH / "floor.py"), str(port), str(workers)]
    server = Server("floor", command, env=dict(os.environ), cwd=scratch)
    stack.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    server.wait_until_up(base + "/", 30)
    return server, base


def app_environment(scratch: Path, database_url: str, port: int, workers: int) -> dict[str, str]:
    """The environment of a production deployment: only what production requires, and
    the rate limits off; every other setting at its production default."""
    from web.settings import Settings

    ours = {name.upper() for name in Settings.__struct_fields__}
    inherited = {key: value for key, value in os.environ.items() if key.upper() not in ours}
    return inherited | {
        "ENVIRONMENT": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(scratch / "data"),
        "LOG_DIR": str(scratch / "logs"),
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "LLM_PROVIDER": "echo",  # production asks for it by name; no answer is sent here
        "SMTP_HOST": "127.0.0.1",  # required in production; no mail is sent here
        "RATE_LIMIT_ENABLED": "false",  # else 100 requests an hour
    }


def start_app(
    stack: contextlib.ExitStack, scratch: Path, database_url: str, workers: int
) -> tuple[Server, str]:
    port = free_port()
    env = app_environment(scratch, database_url, port, workers)
    (scratch / "data").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "web.cli", "serve"]
    server = Server("app", command, env=env, cwd=scratch / "data")
    stack.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    server.wait_until_up(base + "/health", 90)
    return server, base


@contextlib.contextmanager
def database(scratch: Path) -> Iterator[str]:
    """A fresh database on DATABASE_URL's server, else an embedded PostgreSQL."""
    configured = os.environ.get("DATABASE_URL")
    if not configured:
        from adapters.postgres.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(scratch / "postgres")
        try:
            yield embedded.start()
        finally:
            embedded.stop()
        return
    import psycopg

    with psycopg.connect(configured, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    try:
        yield urlsplit(configured)._replace(path=f"/{DATABASE}").geturl()
    finally:
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def log_mb(scratch: Path) -> float:
    """What the app has written to LOG_DIR/app.log (rotated files included)."""
    files = (scratch / "logs").glob("app.log*")
    return round(sum(path.stat().st_size for path in files) / 1024 / 1024, 1)


# --- the load --------------------------------------------------------------------------------


def tool() -> str:
    chosen = os.environ.get("BENCH_TOOL", "").strip().lower()
    if chosen in ("wrk", "loadgen"):
        if chosen == "wrk" and not shutil.which("wrk"):
            raise SystemExit("BENCH_TOOL=wrk, but wrk is not installed")
        return chosen
    return "wrk" if shutil.which("wrk") else "loadgen"


def tool_version(name: str) -> str:
    if name == "loadgen":
        why = "BENCH_TOOL=loadgen" if shutil.which("wrk") else "wrk is not installed"
        return f"bench/loadgen.py in its own process ({why})"
    out = subprocess.run(
        ["wrk", "--version"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return f"wrk {found[1] if found else ''} -t2".replace("  ", " ")


def lua_string(text: str) -> str:
    assert text.isascii()
    assert "\n" not in text
    return json.dumps(text)  # a valid Lua literal for ASCII text


def run_wrk(
    url: str, route: Route, token: str, seconds: int, connections: int, scratch: Path
) -> dict[str, Any]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if route.method != "GET" or route.body is not None:
        script = scratch / "request.lua"
        lines = [f"wrk.method = {lua_string(route.method)}"]
        if route.body is not None:
            lines += [
                f"wrk.body = {lua_string(route.body)}",
                'wrk.headers["Content-Type"] = "application/json"',
            ]
        if route.auth:
            lines.append(f'wrk.headers["Authorization"] = {lua_string("Bearer " + token)}')
        script.write_text("\n".join(lines) + "\n")
        command += ["-s", str(script)]
    elif route.auth:
        command += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return parse_wrk(out.stdout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's report: requests a second, p50 and p99 (--latency) and its error lines."""

    def latency_ms(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
        if not found:
            raise SystemExit(f"no {percent}% latency in wrk's output:\n{text}")
        return round(float(found[1]) * _UNITS_MS[found[2]], 2)

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if not rate or not total:
        raise SystemExit(f"cannot read wrk's output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    socket_errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0),
            strict=True,
        )
    )
    non_2xx_3xx = int(non_2xx[1]) if non_2xx else 0
    return {
        "requests": int(total[1]),
        "requests_per_second": float(rate[1]),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "errors": non_2xx_3xx + sum(socket_errors.values()),
        "non_2xx_3xx": non_2xx_3xx,
        "socket_errors": socket_errors,
    }


def run_loadgen(
    url: str, route: Route, token: str, seconds: int, connections: int
) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "loadgen.py"), url, "--seconds", str(seconds)]
    command += ["--connections", str(connections), "--method", route.method]
    if route.body is not None:
        command += ["--body", route.body]
    if route.auth:
        command += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"bench/loadgen.py failed ({out.returncode}):\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class Bench:
    """The measurements of one run, and what they are measured against."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.tool = tool()
        self.bases: dict[str, str] = {}
        self.results: list[dict[str, Any]] = []

    def login(self) -> str:
        """A fresh access token of the admin's (one a measurement: it outlives it)."""
        login = httpx.post(self.bases["app"] + "/auth/login", json=ADMIN, timeout=30)
        login.raise_for_status()
        token: str = login.json()["access_token"]
        return token

    def check(self, route: Route, token: str) -> None:
        """One request first: a route that fails is reported, not measured."""
        headers = {"Authorization": f"Bearer {token}"} if route.auth else {}
        if route.body is not None:
            headers["Content-Type"] = "application/json"
        url = self.bases[route.server] + route.path
        answer = httpx.request(route.method, url, headers=headers, content=route.body, timeout=30)
        if not answer.is_success:
            raise SystemExit(f"{route.name} answered {answer.status_code}: {answer.text[:500]}")

    def load(self, route: Route, token: str, seconds: int, connections: int) -> dict[str, Any]:
        url = self.bases[route.server] + route.path
        if self.tool == "wrk":
            return run_wrk(url, route, token, seconds, connections, self.scratch)
        return run_loadgen(url, route, token, seconds, connections)

    def measure(self, config: str, workers: int, connections: int, route: Route) -> dict[str, Any]:
        token = self.login() if route.auth else ""
        self.check(route, token)
        self.load(route, token, WARMUP_SECONDS, connections)
        found = self.load(route, token, SECONDS, connections)
        floor = self.find(config, FLOOR)
        result = {
            "bench": "run",
            "config": config,
            "workers": workers,
            "connections": connections,
            "route": route.name,
            "tool": self.tool,
            "seconds": SECONDS,
            "requests_per_second": found["requests_per_second"],
            "floor_pct": percent(found["requests_per_second"], floor or found),
            "p50_ms": found["p50_ms"],
            "p99_ms": found["p99_ms"],
            "errors": found["errors"],
            "non_2xx_3xx": found["non_2xx_3xx"],
            "socket_errors": found["socket_errors"],
            "requests": found["requests"],
        }
        narrow = self.find(f"{workers} worker{'s' * (workers > 1)}, c{CONNECTIONS}", route)
        if connections != CONNECTIONS and narrow is not None:
            result[f"c{CONNECTIONS}_pct"] = percent(found["requests_per_second"], narrow)
        self.results.append(result)
        print(json.dumps(result, separators=(",", ":")), flush=True)
        return result

    def find(self, config: str, route: Route) -> dict[str, Any] | None:
        return next(
            (r for r in self.results if r["config"] == config and r["route"] == route.name), None
        )

    def memory(self, servers: dict[str, Server], workers: int) -> list[str]:
        lines = []
        for name, server in servers.items():
            mb = rss_mb(server.pid)
            record: dict[str, Any] = {"bench": "run", "memory": name, "workers": workers}
            record["rss_mb"] = mb
            line = f"{name}: {mb} MB resident (parent + {workers} worker{'s' * (workers > 1)})"
            if name == "app":
                record["app_log_mb"] = log_mb(self.scratch)
                line += f"; {record['app_log_mb']} MB written to app.log so far (JSON lines)"
            print(json.dumps(record, separators=(",", ":")), flush=True)
            lines.append(line)
        return lines


def percent(rate: float, reference: dict[str, Any]) -> float:
    base = float(reference["requests_per_second"])
    return round(100 * rate / base, 1) if base else 0.0


def print_memory(when: str, lines: list[str]) -> None:
    print(f"\nresident memory {when}:")
    for line in lines:
        print(f"  {line}")


def table(bench: Bench, config: str) -> None:
    rows = [r for r in bench.results if r["config"] == config]
    wide = any(f"c{CONNECTIONS}_pct" in r for r in rows)
    extra = f"  {'of c' + str(CONNECTIONS):>8}" if wide else ""
    print(f"\n{config} ({bench.tool}, {SECONDS} s a route after {WARMUP_SECONDS} s of warm-up)")
    print(
        f"  {'route':<22} {'req/s':>9}  {'of floor':>8}{extra}  "
        f"{'p50 ms':>8}  {'p99 ms':>8}  {'errors':>6}"
    )
    for r in rows:
        share = f"  {r[f'c{CONNECTIONS}_pct']:>7.1f}%" if f"c{CONNECTIONS}_pct" in r else ""
        share = share or ("  " + " " * 8 if wide else "")
        print(
            f"  {r['route']:<22} {r['requests_per_second']:>9.1f}  {r['floor_pct']:>7.1f}%{share}"
            f"  {r['p50_ms']:>8.2f}  {r['p99_ms']:>8.2f}  {r['errors']:>6}"
        )
    if wide:
        for r in rows:
            if f"c{CONNECTIONS}_pct" in r:
                share = r[f"c{CONNECTIONS}_pct"]
                verdict = "met" if share >= WIDE_TARGET_PCT else "NOT met"
                target = f" (target >= {WIDE_TARGET_PCT}%: {verdict})"
                print(
                    f"  {r['route']} at c{r['connections']}: {share:.1f}% of its "
                    f"c{CONNECTIONS} rate{target if r['route'] != FLOOR.name else ''}"
                )


def one_worker(bench: Bench, servers: dict[str, Server]) -> None:
    narrow = f"1 worker, c{CONNECTIONS}"
    wide = f"1 worker, c{WIDE_CONNECTIONS}"
    for route in (FLOOR, HEALTH, ME, LIST):
        bench.measure(narrow, 1, CONNECTIONS, route)
    for route in (FLOOR, LIST):
        bench.measure(wide, 1, WIDE_CONNECTIONS, route)
    # Last, so that both lists above read the same 50 chats.
    bench.measure(narrow, 1, CONNECTIONS, CREATE)
    memory = bench.memory(servers, 1)
    table(bench, narrow)
    table(bench, wide)
    print_memory("after the one-worker runs", memory)


def two_workers(bench: Bench, servers: dict[str, Server]) -> None:
    config = f"2 workers, c{CONNECTIONS}"
    for route in (FLOOR, LIST):
        bench.measure(config, 2, CONNECTIONS, route)
    memory = bench.memory(servers, 2)
    table(bench, config)
    print_memory("after the two-worker runs", memory)


def create_chats(base: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for number in range(CHATS):
            made = client.post("/chats", json={"title": f"bench chat {number + 1}"})
            made.raise_for_status()


def main() -> None:
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    configured = os.environ.get("DATABASE_URL")
    where = f"a fresh {DATABASE} on DATABASE_URL's server" if configured else "embedded"
    print(f"cores: {os.cpu_count()}; load: {tool_version(tool())}", flush=True)
    print(
        "servers: granian (ASGI, Loops.auto, log_access=False), the floor and "
        f"gemini-backend in production with its JSON access log; PostgreSQL: {where}"
        + ("; BENCH_QUICK: 1 s a route, no two-worker part" if QUICK else ""),
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="gmbench"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        url = stack.enter_context(database(scratch))
        bench = Bench(scratch)
        for workers in (1,) if QUICK else (1, 2):
            with contextlib.ExitStack() as servers_stack:
                floor, bench.bases["floor"] = start_floor(servers_stack, scratch, workers)
                app, bench.bases["app"] = start_app(servers_stack, scratch, url, workers)
                if workers == 1:
                    create_chats(bench.bases["app"], bench.login())
                    one_worker(bench, {"floor": floor, "app": app})
                else:
                    two_workers(bench, {"floor": floor, "app": app})


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
