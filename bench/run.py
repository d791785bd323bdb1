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

After the one-worker loads (the app's server still up):

- the first delta: FIRST_DELTA_SENDS questions (200), one at a time, each
  streamed (``Accept: text/event-stream``), timed from sending to the first
  ``delta`` event, with the offline model, which writes its first piece at once;
- logins: ``POST /auth/login`` with STORM_CONNECTIONS (8) connections, against
  the cores' hashing capacity with the server's Argon2 parameters, measured in
  this process: one verification alone, and as many verifications a second as
  one thread a core manage at once;
- a storm: ``GET /chats?limit=20`` at 64 connections, once alone and once while
  logins run beside it, to compare the list's p99.

A table per configuration gives each route's requests per second, its share of
the floor's in the same configuration, p50, p99 and errors (answers outside
2xx/3xx, and socket errors), then each server's resident memory (each worker,
and granian's parent). The run ends with the issue's targets, each with what
this run measured and whether it met it. Every measurement is also printed as
one JSON line (starting with ``{``) for scripts. BENCH_QUICK=1 is a smoke run:
1 s a route after 1 s of warm-up, 20 first deltas, and no two-worker part.
Every process and temporary directory is removed at the end, on Ctrl-C or on
a failure too.

Numbers depend on the machine, and the load tool shares its cores with the
servers; compare runs on one machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import ADMIN, children, free_port, fresh_database, postgres_server, rss_mb  # bench/

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

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
LOGIN = Route("POST /auth/login", "app", "/auth/login", "POST", body=json.dumps(ADMIN))

# The targets (shares of the floor in the same run, and the rest).
SHARE_TARGETS = {HEALTH.name: 40.0, ME.name: 35.0, LIST.name: 25.0, CREATE.name: 25.0}
LIST_P99_OVER_P50 = 3.0
WORKER_MB_TARGET = 120.0
FIRST_DELTA_TARGET_MS = 10.0
LOGIN_TARGET_PCT = 90.0
STORM_P99_FACTOR = 2.0
STORM_CONNECTIONS = 8  # logins at once: enough to keep every hashing thread busy
FIRST_DELTA_SENDS = 20 if QUICK else 200


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
def database() -> Iterator[str]:
    """A fresh database on DATABASE_URL's server, else on an embedded PostgreSQL."""
    with postgres_server() as server_url, fresh_database(server_url, DATABASE) as url:
        yield url


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


def wrk_command(
    url: str, route: Route, token: str, seconds: int, connections: int, scratch: Path
) -> list[str]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if route.method != "GET" or route.body is not None:
        script = scratch / (re.sub(r"\W+", "-", route.name).strip("-") + ".lua")
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
    return [*command, url]


def read_wrk(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
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


def loadgen_command(
    url: str, route: Route, token: str, seconds: int, connections: int
) -> list[str]:
    command = [sys.executable, str(BENCH / "loadgen.py"), url, "--seconds", str(seconds)]
    command += ["--connections", str(connections), "--method", route.method]
    if route.body is not None:
        command += ["--body", route.body]
    if route.auth:
        command += ["-H", f"Authorization: Bearer {token}"]
    return command


def read_loadgen(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
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
        self.worker_mb = 0.0
        self.extra: dict[str, dict[str, Any]] = {}  # first delta, logins, the storm

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

    def command(self, route: Route, token: str, seconds: int, connections: int) -> list[str]:
        url = self.bases[route.server] + route.path
        if self.tool == "wrk":
            return wrk_command(url, route, token, seconds, connections, self.scratch)
        return loadgen_command(url, route, token, seconds, connections)

    def read(self, out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        return read_wrk(out) if self.tool == "wrk" else read_loadgen(out)

    def load(self, route: Route, token: str, seconds: int, connections: int) -> dict[str, Any]:
        command = self.command(route, token, seconds, connections)
        return self.read(subprocess.run(command, capture_output=True, text=True, check=False))  # noqa: S603

    def load_beside(
        self, route: Route, token: str, seconds: int, connections: int, beside: Route
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``route`` loaded while ``beside`` is loaded too (with STORM_CONNECTIONS),
        the second starting first and ending last."""
        storm = self.command(beside, "", seconds + 2, STORM_CONNECTIONS)
        with subprocess.Popen(  # noqa: S603
            storm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as background:
            time.sleep(1)
            found = self.load(route, token, seconds, connections)
            out, err = background.communicate(timeout=seconds + 60)
        return found, self.read(subprocess.CompletedProcess(storm, background.returncode, out, err))

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
            parent = rss_mb(server.pid)
            each = [rss_mb(pid) for pid in children(server.pid)]
            record: dict[str, Any] = {"bench": "run", "memory": name, "workers": workers}
            record |= {"parent_rss_mb": parent, "worker_rss_mb": each}
            shown = ", ".join(f"{mb} MB" for mb in each)
            line = f"{name}: worker{'s' * (len(each) > 1)} {shown}; parent {parent} MB"
            if name == "app":
                record["app_log_mb"] = log_mb(self.scratch)
                line += f"; {record['app_log_mb']} MB written to app.log so far (JSON lines)"
                self.worker_mb = max([self.worker_mb, *each])
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
    first_delta(bench)
    logins(bench)
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


def first_delta(bench: Bench) -> None:
    """From sending a question to its answer's first ``delta`` event, one send
    at a time, with the offline model (which writes its first piece at once)."""
    base, token = bench.bases["app"], bench.login()
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    waits: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for number in range(10 + FIRST_DELTA_SENDS):
            if number % 20 == 0:  # a chat's history grows; a fresh one now and then
                made = client.post("/chats", json={"title": "first delta"})
                made.raise_for_status()
                chat = made.json()["id"]
            started = time.perf_counter()
            first = None
            question = {"content": "What should I see in Lisbon in one day?"}
            with client.stream("POST", f"/chats/{chat}/messages", json=question) as answer:
                answer.raise_for_status()
                for line in answer.iter_lines():
                    if first is None and line == "event: delta":
                        first = time.perf_counter() - started
            if first is None:
                raise SystemExit("an answer sent no delta")
            if number >= 10:  # warm-up
                waits.append(first * 1000)
    waits.sort()
    result = {
        "bench": "run",
        "measure": "first delta",
        "sends": len(waits),
        "p50_ms": round(statistics.median(waits), 2),
        "p90_ms": round(waits[int(0.9 * len(waits))], 2),
    }
    bench.extra["first delta"] = result
    print(json.dumps(result, separators=(",", ":")), flush=True)


def hashing_capacity(seconds: float) -> tuple[float, float]:
    """(one verification alone, in ms; verifications a second with one per core
    at once) with the server's Argon2 parameters, measured in this process."""
    from adapters.passwords import Argon2PasswordHasher

    hasher = Argon2PasswordHasher()._hasher
    password = ADMIN["password"].encode()
    stored = hasher.hash(password)
    alone = []
    for _ in range(5 if QUICK else 20):
        started = time.perf_counter()
        hasher.verify(stored, password)
        alone.append(time.perf_counter() - started)
    cores = os.cpu_count() or 1
    done = [0] * cores
    until = time.perf_counter() + seconds

    def verify_until(slot: int) -> None:
        while time.perf_counter() < until:
            hasher.verify(stored, password)
            done[slot] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=verify_until, args=(i,)) for i in range(cores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.median(alone) * 1000, sum(done) / (time.perf_counter() - started)


def logins(bench: Bench) -> None:
    """The login rate against what the cores can hash, and the list's p99
    during a storm of logins against its p99 without one."""
    alone_ms, capacity = hashing_capacity(2 if QUICK else 5)
    cores = os.cpu_count() or 1
    bench.check(LOGIN, "")
    bench.load(LOGIN, "", WARMUP_SECONDS, STORM_CONNECTIONS)
    found = bench.load(LOGIN, "", SECONDS, STORM_CONNECTIONS)
    rate = found["requests_per_second"]
    result = {
        "bench": "run",
        "measure": "logins",
        "connections": STORM_CONNECTIONS,
        "requests_per_second": rate,
        "p50_ms": found["p50_ms"],
        "p99_ms": found["p99_ms"],
        "errors": found["errors"],
        "verify_alone_ms": round(alone_ms, 1),
        "cores_over_one_verify": round(cores * 1000 / alone_ms, 1),
        "hashing_capacity": round(capacity, 1),
        "of_cores_over_one_verify_pct": round(100 * rate * alone_ms / (cores * 1000), 1),
        "of_hashing_capacity_pct": round(100 * rate / capacity, 1),
    }
    bench.extra["logins"] = result
    print(json.dumps(result, separators=(",", ":")), flush=True)

    token = bench.login()
    bench.load(LIST, token, WARMUP_SECONDS, CONNECTIONS)
    idle = bench.load(LIST, token, SECONDS, CONNECTIONS)
    during, storm = bench.load_beside(LIST, token, SECONDS, CONNECTIONS, LOGIN)
    result = {
        "bench": "run",
        "measure": "login storm",
        "route": LIST.name,
        "idle_p99_ms": idle["p99_ms"],
        "storm_p99_ms": during["p99_ms"],
        "idle_requests_per_second": idle["requests_per_second"],
        "storm_requests_per_second": during["requests_per_second"],
        "logins_per_second": storm["requests_per_second"],
        "errors": during["errors"] + storm["errors"],
    }
    bench.extra["login storm"] = result
    print(json.dumps(result, separators=(",", ":")), flush=True)


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def targets(bench: Bench) -> None:
    """Every target of the issue, with what this run measured."""
    narrow = f"1 worker, c{CONNECTIONS}"
    wide = f"1 worker, c{WIDE_CONNECTIONS}"
    lines: list[tuple[str, str, bool]] = []
    for route in (LIST, CREATE, ME, HEALTH):
        found = bench.find(narrow, route)
        if found is not None:
            goal = SHARE_TARGETS[route.name]
            share = found["floor_pct"]
            lines.append((f"{route.name}: >= {goal:g}% of the floor", f"{share}%", share >= goal))
    found = bench.find(narrow, LIST)
    if found is not None:
        ratio = found["p99_ms"] / found["p50_ms"] if found["p50_ms"] else math.inf
        what = f"{LIST.name}: p99 <= {LIST_P99_OVER_P50:g} x p50"
        lines.append((what, f"{ratio:.1f} x", ratio <= LIST_P99_OVER_P50))
    found = bench.find(wide, LIST)
    if found is not None:
        share = found.get(f"c{CONNECTIONS}_pct", 0.0)
        what = f"c{WIDE_CONNECTIONS}: no errors, >= {WIDE_TARGET_PCT}% of c{CONNECTIONS}"
        shown = f"{share}%, {found['errors']} errors"
        lines.append((what, shown, share >= WIDE_TARGET_PCT and found["errors"] == 0))
    login = bench.extra.get("logins")
    if login is not None:
        what = f"logins: >= {LOGIN_TARGET_PCT:g}% of cores / one verification"
        shown = (
            f"{login['requests_per_second']}/s = {login['of_cores_over_one_verify_pct']}% of "
            f"{login['cores_over_one_verify']}/s ({login['of_hashing_capacity_pct']}% of the "
            f"{login['hashing_capacity']}/s the cores hash with one verification each at once)"
        )
        lines.append((what, shown, login["of_cores_over_one_verify_pct"] >= LOGIN_TARGET_PCT))
    storm = bench.extra.get("login storm")
    if storm is not None:
        what = f"{LIST.name} p99 in a login storm <= {STORM_P99_FACTOR:g} x idle"
        idle, during = storm["idle_p99_ms"], storm["storm_p99_ms"]
        shown = f"{during} ms vs {idle} ms ({during / idle:.2f} x)"
        lines.append((what, shown, during <= STORM_P99_FACTOR * idle))
    if bench.worker_mb:
        what = f"a worker's resident memory <= {WORKER_MB_TARGET:g} MB"
        lines.append((what, f"{bench.worker_mb} MB", bench.worker_mb <= WORKER_MB_TARGET))
    delta = bench.extra.get("first delta")
    if delta is not None:
        what = f"request to first delta: p50 <= {FIRST_DELTA_TARGET_MS:g} ms"
        lines.append((what, f"{delta['p50_ms']} ms", delta["p50_ms"] <= FIRST_DELTA_TARGET_MS))
    print("\ntargets (search and statistics: make bench-scale)")
    for what, shown, met in lines:
        print(f"  {verdict(met):<8} {what}: {shown}")


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
        url = stack.enter_context(database())
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
        targets(bench)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
