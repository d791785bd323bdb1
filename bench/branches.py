"""``make bench-branches``: what the message tree costs as a chat grows.

Compares chats of 10 and 100 messages with one of 10,000 messages in 50 branches, on
the PostgreSQL repositories a worker uses (DATABASE_URL when set, else an
embedded server in a temporary directory), in a fresh database:

- the history a send reads (the newest 50 messages of the active branch, each
  with its siblings),
- a chat's page (the newest 100 of the branch),
- a send (the message stored after the current leaf, then its history read),
- a switch to another branch (``PUT /current``: down to its newest leaf).

Prints the median milliseconds of each. The first three walk a bounded number
of steps up the tree (at most the page), so the chat of 10,000 costs what the
chat of 100 does (the chat of 10 has fewer than a page to read); a switch
walks down the branch it lands on, so it grows with that branch's depth (here
200), not with the chat's size.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from adapters.postgres import migrations
from adapters.postgres.chats import PostgresChatRepository, PostgresMessageRepository
from adapters.postgres.embedded import EmbeddedPostgres
from adapters.postgres.pool import Database
from gemini_core.entities import MessageRole, NewChat, NewMessage

BRANCHES = 50
DEPTH = 200  # 50 branches of 200 messages: 10,000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))


async def build_chat(db: Database, user_id: int, *, branches: int, depth: int) -> tuple[int, int]:
    """A chat of ``branches`` branches of ``depth`` messages, each forking from the
    first branch's first messages; returns (chat id, a message near the root)."""
    chat = await PostgresChatRepository(db).add(NewChat(user_id=user_id, model="echo"))
    async with db.connection() as conn, conn.cursor() as cur:
        trunk: list[int] = []
        for branch in range(branches):
            parent = trunk[min(branch, len(trunk) - 1)] if trunk else None
            for n in range(depth if branch == 0 else depth - 1):
                role = "user" if n % 2 == 0 else "assistant"
                await cur.execute(
                    "INSERT INTO messages (chat_id, user_id, role, content, parent_id)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (chat.id, user_id, role, f"message {branch}.{n} " * 20, parent),
                )
                row = await cur.fetchone()
                assert row is not None
                parent = row["id"]
                if branch == 0:
                    trunk.append(parent)
        await cur.execute(
            "UPDATE chats SET current_message_id = %s,"
            " message_count = (SELECT count(*) FROM messages WHERE chat_id = %s) WHERE id = %s",
            (parent, chat.id, chat.id),
        )
    return chat.id, trunk[1]


async def median_ms(call: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(db: Database, user_id: int, chat_id: int, fork: int) -> dict[str, float]:
    chats, messages = PostgresChatRepository(db), PostgresMessageRepository(db)
    chat = await chats.get(user_id, chat_id)
    assert chat is not None
    assert chat.current_message_id is not None
    leaf = chat.current_message_id

    async def history() -> object:
        return await messages.branch(user_id, chat_id, ending_at=leaf, limit=50)

    async def page() -> object:
        return await messages.branch(user_id, chat_id, ending_at=leaf, limit=100)

    async def send() -> object:
        """A send's own reads and writes: the message stored, the history read."""
        new = NewMessage(
            chat_id=chat_id, user_id=user_id, role=MessageRole.USER, content="hi", parent_id=leaf
        )
        added = await messages.add(new)
        return await messages.branch(user_id, chat_id, ending_at=added.id, limit=50)

    async def switch() -> object:
        return await chats.select_branch(user_id, chat_id, fork)

    return {
        "history (50)": await median_ms(history),
        "page (100)": await median_ms(page),
        "send": await median_ms(send),
        "switch branch": await median_ms(switch),
    }


async def run(url: str) -> None:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    target = urlsplit(url)._replace(path=f"/{name}").geturl()
    try:
        migrations.apply(target)
        db = Database(target, min_size=1, max_size=2)
        await db.open()
        try:
            async with db.connection() as conn:
                row = await (
                    await conn.execute(
                        "INSERT INTO users (email, username, password_hash)"
                        " VALUES ('b@example.com', 'bench', 'x') RETURNING id"
                    )
                ).fetchone()
            assert row is not None
            user_id = row["id"]
            small = await build_chat(db, user_id, branches=1, depth=10)
            medium = await build_chat(db, user_id, branches=1, depth=100)
            big = await build_chat(db, user_id, branches=BRANCHES, depth=DEPTH)
            async with db.connection() as conn:
                await conn.execute("ANALYZE messages")
                await conn.execute("ANALYZE chats")
            results = [await measure(db, user_id, *chat) for chat in (small, medium, big)]
        finally:
            await db.close()
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    print(f"median ms over {ROUNDS} rounds   10 messages   100 messages   10,000 in 50 branches")
    for key in results[0]:
        a, b, c = (result[key] for result in results)
        print(f"{key:<28} {a:>11.3f}   {b:>12.3f}   {c:>21.3f}")


def main() -> None:
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(run(url))
        return
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedPostgres(Path(directory))
        try:
            asyncio.run(run(server.start()))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
