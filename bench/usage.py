"""``make bench-usage``: the usage reports over a million messages.

Seeds a fresh database (``gmbench_usage`` on the server DATABASE_URL points
at, else on an embedded PostgreSQL in a temporary directory) in server-side
SQL: ``BENCH_USERS`` (2,000) users, one of them heavy (200 chats), in
``BENCH_CHATS`` (10,000) chats of ``BENCH_MESSAGES`` (1,000,000) messages,
half of them answers with prompt and completion tokens, each on a UTC day of
the last 90; the schema is the server's own migrations. Then starts
``gemini-backend serve`` with one worker on it, gives the bootstrap admin a
chat whose 1,000 answers span the last year, builds the ``usage_days`` rollup
from every answer in one ``INSERT ... SELECT ... GROUP BY`` (as migration 0005
does), and times, over one keep-alive connection, ``BENCH_ROUNDS`` (200)
sequential requests of each of:

- ``GET /usage`` (the admin's last 30 days) and over 365 days,
- ``GET /admin/usage`` (every user's last 30 days, page 1 of 20) and page 50
  over 90 days.

Prints one JSON line each: median and p95 milliseconds, the median execution
time PostgreSQL reports for the statement behind it (EXPLAIN ANALYZE), and
whether p95 is under the 20 ms target. Drops the database at the end unless
``BENCH_KEEP=1``. Numbers depend on the machine; compare runs on one machine.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import ADMIN, backend, fresh_database, postgres_server, timed  # noqa: E402

from adapters.postgres import migrations  # noqa: E402
from adapters.postgres.usage import _BY_USER, _DAYS, _cover  # noqa: E402

USERS = int(os.environ.get("BENCH_USERS", "2000"))
CHATS = int(os.environ.get("BENCH_CHATS", "10000"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))
NAME = "gmbench_usage"
HEAVY_CHATS = CHATS // 50  # user 1's (200); the other users share the rest
DAYS = 90  # the seeded answers' days: today and the 89 before
ADMIN_ANSWERS = 1000  # the admin's, over the last 365 days
TARGET_MS = 20.0

# --- seeding -------------------------------------------------------------------------

_USERS = """
INSERT INTO users (id, email, username, full_name, password_hash, is_verified, created_at)
OVERRIDING SYSTEM VALUE
SELECT n,
       CASE WHEN n = 1 THEN 'heavy@bench.example' ELSE 'user' || n || '@bench.example' END,
       CASE WHEN n = 1 THEN 'heavy' ELSE 'user' || n END,
       'Bench User ' || n, 'not a hash', true, now() - interval '120 days'
FROM generate_series(1, %(users)s) AS n
"""

_CHATS = """
INSERT INTO chats (id, user_id, title, model, created_at, updated_at, message_count)
OVERRIDING SYSTEM VALUE
SELECT c,
       CASE WHEN c <= %(heavy)s THEN 1 ELSE 2 + (c - %(heavy)s - 1) %% (%(users)s - 1) END,
       'chat ' || c, 'echo', now() - interval '100 days', now(), %(per_chat)s
FROM generate_series(1, %(chats)s) AS c
"""

# Each chat is one branch of question/answer pairs: message ids are
# (chat - 1) * per_chat + 1 .. chat * per_chat, each the child of the one
# before. Each pair lands at a random time of one of the last ``days`` UTC days.
_MESSAGES = """
INSERT INTO messages (id, chat_id, user_id, role, content, status, model,
                      prompt_tokens, completion_tokens, created_at, parent_id, usage_day)
OVERRIDING SYSTEM VALUE
SELECT m.*
FROM (
    SELECT (p - 1) / %(pairs)s + 1 AS chat,
           (p - 1) %% %(pairs)s AS pair,
           2 * p - 1 AS question,
           (now() AT TIME ZONE 'UTC')::date - floor(random() * %(days)s)::int
               + random() * interval '86000 seconds' AS at,
           random() AS r
    FROM generate_series(1, %(messages)s / 2) AS p
) AS s
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.chat <= %(heavy)s THEN 1
                ELSE 2 + (s.chat - %(heavy)s - 1) %% (%(users)s - 1) END AS user_id
) AS owner
CROSS JOIN LATERAL (VALUES
    (s.question::bigint, s.chat, owner.user_id, 'user', 'question ' || s.question, 'complete',
     NULL::text, NULL::integer, NULL::integer, (s.at - interval '5 seconds') AT TIME ZONE 'UTC',
     CASE WHEN s.pair > 0 THEN s.question - 1 END, NULL::date),
    (s.question + 1, s.chat, owner.user_id, 'assistant', 'answer ' || s.question, 'complete',
     'echo', 40 + 60 * s.pair + floor(s.r * 200)::int, 100 + floor(s.r * 800)::int,
     s.at AT TIME ZONE 'UTC', s.question, s.at::date)
) AS m
"""

_ADMIN_CHAT = """
WITH chat AS (
    INSERT INTO chats (user_id, title, model, message_count)
    VALUES (%(admin)s, 'the admin''s year', 'echo', 2 * %(answers)s) RETURNING id
),
inserted AS (
    INSERT INTO messages (chat_id, user_id, role, content, model,
                          prompt_tokens, completion_tokens, created_at, usage_day)
    SELECT chat.id, %(admin)s, 'assistant', 'answer ' || n, 'echo',
           500 + n %% 300, 300 + n %% 500, at AT TIME ZONE 'UTC', at::date
    FROM chat, generate_series(1, %(answers)s) AS n,
         LATERAL (SELECT (now() AT TIME ZONE 'UTC')::date - (n %% 365)
                         + interval '12 hours' AS at) AS t
    RETURNING id
)
SELECT count(*) FROM inserted
"""

# As migration 0005 backfills them: the days, then their spans in one statement
# (the trigger that keeps the spans as answers come is off meanwhile).
_ROLLUP = """
INSERT INTO usage_days (user_id, day, messages, prompt_tokens, completion_tokens)
SELECT user_id, usage_day, count(*), coalesce(sum(prompt_tokens), 0),
       coalesce(sum(completion_tokens), 0)
FROM messages
WHERE role = 'assistant'
GROUP BY user_id, usage_day
"""
_SPANS = """
INSERT INTO usage_spans (level, start, user_id, messages, prompt_tokens, completion_tokens)
SELECT level, DATE '0001-01-01' + ((day - DATE '0001-01-01') & ~((1 << level) - 1)),
       user_id, sum(messages), sum(prompt_tokens), sum(completion_tokens)
FROM usage_days CROSS JOIN generate_series(1, 9) AS level
GROUP BY 1, 2, 3
"""


def seed(url: str, phases: dict[str, float]) -> None:
    """Users, chats and messages (not yet the admin's, nor the rollup)."""
    params = {
        "users": USERS,
        "chats": CHATS,
        "messages": MESSAGES,
        "heavy": HEAVY_CHATS,
        "per_chat": MESSAGES // CHATS,
        "pairs": MESSAGES // CHATS // 2,
        "days": DAYS,
    }
    with psycopg.connect(url) as conn:
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        # Foreign keys hold by construction; checking a million of them one by
        # one is most of an insert's time. Needs a superuser; else they are checked.
        try:
            with conn.transaction():
                conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            pass
        # Indexes built once at the end cost less than a million updates each.
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'messages' AND indexname <> 'messages_pkey'"
        ).fetchall()
        with timed(phases, "users and chats s"):
            conn.execute(_USERS, params)
            conn.execute(_CHATS, params)
            conn.commit()
        with timed(phases, "messages s"):
            for index_name, _ in indexes:
                conn.execute(f'DROP INDEX "{index_name}"')
            conn.execute(_MESSAGES, params)
            conn.commit()
        with timed(phases, "message indexes s"):
            for _, definition in indexes:
                conn.execute(definition)
            conn.execute("UPDATE chats SET current_message_id = id * %(per_chat)s", params)
            for table in ("users", "chats", "messages"):
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
            conn.commit()


def seed_admin_and_rollup(url: str, phases: dict[str, float]) -> int:
    """The admin's year of answers and every user's rollup; returns the admin's id."""
    with psycopg.connect(url) as conn:
        conn.execute("SET work_mem = '256MB'")
        row = conn.execute(
            "SELECT id FROM users WHERE lower(email) = lower(%s)", (ADMIN["email"],)
        ).fetchone()
        assert row is not None, "the server did not create its admin"
        admin_id = int(row[0])
        conn.execute(_ADMIN_CHAT, {"admin": admin_id, "answers": ADMIN_ANSWERS})
        with timed(phases, "usage_days rollup s"):
            conn.execute("ALTER TABLE usage_days DISABLE TRIGGER usage_days_spans")
            conn.execute(_ROLLUP)
            conn.execute(_SPANS)
            conn.execute("ALTER TABLE usage_days ENABLE TRIGGER usage_days_spans")
            conn.commit()
        conn.autocommit = True
        # What autovacuum does soon after a load: statistics, and the visibility
        # map index-only scans rely on.
        with timed(phases, "vacuum analyze s"):
            for table in ("users", "chats", "messages", "usage_days", "usage_spans"):
                conn.execute(f"VACUUM (ANALYZE) {table}")
    return admin_id


# --- measuring -----------------------------------------------------------------------


def explain_ms(url: str, sql: str, params: dict[str, Any]) -> float:
    """The median execution time PostgreSQL reports for ``sql`` (after a warm-up)."""
    times = []
    with psycopg.connect(url) as conn:
        for _ in range(6):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
            assert plan is not None
            times.append(float(plan[0][0]["Execution Time"]))
    return round(statistics.median(times[1:]), 2)


def latency(client: httpx.Client, path: str) -> dict[str, float]:
    for _ in range(20):  # warm up
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return {
        "p50 ms": round(statistics.median(times), 2),
        "p95 ms": round(statistics.quantiles(times, n=20)[-1], 2),
    }


def measure(base: str, url: str, admin_id: int) -> list[dict[str, object]]:
    today = datetime.now(UTC).date()
    year, quarter, month = (today - timedelta(days=n) for n in (365, DAYS - 1, 29))

    def days(first: date) -> dict[str, Any]:
        return {"user_id": admin_id, "first": first, "last": today}

    def by_user(first: date, page: int) -> dict[str, Any]:
        days, levels, starts = _cover(first, today)
        return {
            "days": days,
            "levels": levels,
            "starts": starts,
            "offset": (page - 1) * 20,
            "limit": 20,
        }

    routes = [
        ("GET /usage (30 days)", "/usage", _DAYS, days(month)),
        ("GET /usage (365 days)", f"/usage?from={year}&to={today}", _DAYS, days(year)),
        ("GET /admin/usage (30 days, page 1)", "/admin/usage", _BY_USER, by_user(month, 1)),
        (
            "GET /admin/usage (365 days, page 1)",
            f"/admin/usage?from={year}&to={today}",
            _BY_USER,
            by_user(year, 1),
        ),
        (
            "GET /admin/usage (90 days, page 50 of 20)",
            f"/admin/usage?from={quarter}&to={today}&page=50&size=20",
            _BY_USER,
            by_user(quarter, 50),
        ),
    ]
    results: list[dict[str, object]] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        token = client.post("/auth/login", json=ADMIN).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        for name, path, sql, params in routes:
            timing = latency(client, path)
            body = client.get(path).json()
            rows = (
                len(body["days"]) if "days" in body else f"{len(body['items'])} of {body['total']}"
            )
            result: dict[str, object] = {
                "route": name,
                "requests": ROUNDS,
                **timing,
                "sql ms": explain_ms(url, sql, params),
                "rows": rows,
                f"p95 < {TARGET_MS:g} ms": "met" if timing["p95 ms"] < TARGET_MS else "NOT met",
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


# --- the run -------------------------------------------------------------------------


def run(server_url: str) -> None:
    with (
        fresh_database(server_url, NAME) as url,
        tempfile.TemporaryDirectory(prefix="gmusage") as data_dir,
    ):
        phases: dict[str, float] = {}
        started = time.monotonic()
        with timed(phases, "migrations s"):
            migrations.apply(url)
        seed(url, phases)
        with backend(Path(data_dir), DATABASE_URL=url) as (_, base):
            admin_id = seed_admin_and_rollup(url, phases)
            with psycopg.connect(url) as conn:
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM chats),"
                    " (SELECT count(*) FROM messages),"
                    " (SELECT count(*) FROM messages WHERE role = 'assistant'),"
                    " (SELECT count(*) FROM usage_days),"
                    " pg_size_pretty(pg_database_size(current_database()))"
                ).fetchone()
            assert counts is not None
            print(
                json.dumps(
                    {
                        "users": counts[0],
                        "chats": counts[1],
                        "messages": counts[2],
                        "answers": counts[3],
                        "usage_days rows": counts[4],
                        "database": counts[5],
                        "seed s (with the server's start)": round(time.monotonic() - started, 1),
                        **phases,
                    }
                ),
                flush=True,
            )
            print(
                f"one worker, {ROUNDS} sequential requests a route over one connection; "
                f"{os.cpu_count()} cores",
                flush=True,
            )
            results = measure(base, url, admin_id)
            met = all(str(r[f"p95 < {TARGET_MS:g} ms"]) == "met" for r in results)
            print(
                f"every route p95 under {TARGET_MS:g} ms: {'met' if met else 'NOT met'}", flush=True
            )


def main() -> None:
    assert MESSAGES % (2 * CHATS) == 0, "BENCH_MESSAGES must be a multiple of 2 * BENCH_CHATS"
    with postgres_server() as server_url:
        run(server_url)


if __name__ == "__main__":
    main()
