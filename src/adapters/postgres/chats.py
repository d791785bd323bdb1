"""Chats and their messages in PostgreSQL.

A chat's ``message_count``, ``updated_at`` and current leaf change in the same
statement that stores a message: it locks the chat's row first, so concurrent
adds queue behind each other and never lose a count, and a chat that is not
the caller's (or a parent that is not in the chat) gets neither the message
nor the bump.

Messages form a tree (``parent_id``). A branch is read by walking up from its
last message, one primary-key lookup a step, and stops after the page: a chat
of ten thousand messages costs what a chat of ten does. Each message's
``siblings`` come from ``messages_chat_parent_idx``.

An answer being written is a ``streaming`` row from its first moment. A partial
unique index (``messages_streaming_chat_key``) allows one per chat, so two
processes starting an answer in one chat cannot both succeed; starts by one
user take turns on an advisory lock when their running answers are capped, so
the count they read cannot be overtaken. ``owner`` names the process writing an
answer by the key of the advisory lock it holds for its lifetime: an owner
whose lock nobody holds is gone, and ``fail_orphaned`` finds it in
``pg_locks``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row, scalar_row

from adapters.postgres._common import (
    ANSWER_OWNER_LOCK_CLASS,
    execute,
    fetch_all,
    fetch_one,
    pairs,
    query_one,
    rows_as,
    translated_errors,
)
from adapters.postgres.pool import Database
from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    Message,
    MessageRole,
    MessageStatus,
    NewAnswer,
    NewChat,
    NewMessage,
)
from gemini_core.errors import (
    AnswerInProgressError,
    InvalidInputError,
    NotFoundError,
    TooManyAnswersError,
)
from gemini_core.ports import SEARCH_WINDOW, SearchHit

_CHAT_COLUMNS = """
    id, user_id, title, model, system_prompt, pinned, archived,
    created_at, updated_at, message_count, current_message_id
"""

_INSERT_CHAT = (
    """
INSERT INTO chats (user_id, title, model, system_prompt)
VALUES (%(user_id)s, %(title)s, %(model)s, %(system_prompt)s)
RETURNING"""
    + _CHAT_COLUMNS
)

_GET_CHAT = "SELECT" + _CHAT_COLUMNS + "FROM chats WHERE id = %(id)s AND user_id = %(user_id)s"

# The first page and the pages after a cursor are separate statements so
# each gets a plan that walks chats_user_list_idx. The row comparison works
# because every key of the order is descending.
_LIST_FILTER = """
WHERE user_id = %(user_id)s
  AND archived = %(archived)s
  AND (%(query)s::text IS NULL OR strpos(lower(title), lower(%(query)s::text)) > 0)
"""
_LIST_ORDER = """
ORDER BY pinned DESC, updated_at DESC, id DESC
LIMIT %(limit)s
"""
_LIST_CHATS = "SELECT" + _CHAT_COLUMNS + "FROM chats" + _LIST_FILTER + _LIST_ORDER
_LIST_CHATS_AFTER = (
    "SELECT"
    + _CHAT_COLUMNS
    + "FROM chats"
    + _LIST_FILTER
    + """
  AND (pinned, updated_at, id)
      < (%(after_pinned)s::boolean, %(after_updated_at)s::timestamptz, %(after_id)s::bigint)
"""
    + _LIST_ORDER
)

_UPDATE_CHAT = (
    """
UPDATE chats SET
    title = CASE WHEN %(clear_title)s THEN NULL ELSE COALESCE(%(title)s::text, title) END,
    system_prompt = CASE WHEN %(clear_system_prompt)s THEN NULL
                         ELSE COALESCE(%(system_prompt)s::text, system_prompt) END,
    pinned = COALESCE(%(pinned)s::boolean, pinned),
    archived = COALESCE(%(archived)s::boolean, archived),
    model = COALESCE(%(model)s::text, model),
    updated_at = now()
WHERE id = %(id)s AND user_id = %(user_id)s
RETURNING"""
    + _CHAT_COLUMNS
)

# Messages go with the chat (ON DELETE CASCADE).
_DELETE_CHAT = "DELETE FROM chats WHERE id = %(id)s AND user_id = %(user_id)s"

_MESSAGE_FIELDS = """
    id, chat_id, user_id, role, content, file_ids, status, model,
    prompt_tokens, completion_tokens, created_at, parent_id, owner
"""


def _message_columns(table: str, *, just_added: bool = False) -> str:
    """The message columns of ``table`` (an alias), and its siblings: the children
    of its parent in its chat, oldest first (two forms, so each is an index range).

    A message ``just_added`` by the same statement is not yet visible to it: its
    siblings are the others, then itself (the newest: adds to a chat are serial)."""
    fields = ", ".join(f"{table}.{name.strip()}" for name in _MESSAGE_FIELDS.split(","))
    itself = f" || {table}.id" if just_added else ""
    return f"""
    {fields},
    CASE WHEN {table}.parent_id IS NULL
        THEN ARRAY(SELECT s.id FROM messages AS s
                   WHERE s.chat_id = {table}.chat_id AND s.parent_id IS NULL ORDER BY s.id)
        ELSE ARRAY(SELECT s.id FROM messages AS s
                   WHERE s.chat_id = {table}.chat_id AND s.parent_id = {table}.parent_id
                   ORDER BY s.id)
    END{itself} AS siblings
"""


# The end of a statement that adds a message (``added``): its chat counts it and
# points at it, and the message comes back with its siblings.
_COUNT_ADDED = (
    """
counted AS (
    UPDATE chats
    SET message_count = message_count + 1, updated_at = now(), current_message_id = added.id
    FROM added
    WHERE chats.id = added.chat_id
)
SELECT"""
    + _message_columns("added", just_added=True)
    + "FROM added"
)

# The chat's row is locked first; the message goes in only when the chat is
# the user's and the parent (if any) is one of its messages, or the parent is
# the chat's current leaf as read under that lock; then the chat counts it and
# points at it. The casts fix the parameters' types, which an
# INSERT ... SELECT does not infer from the target columns.
_INSERT_MESSAGE = (
    """
WITH chat AS (
    SELECT id, user_id, current_message_id FROM chats
    WHERE id = %(chat_id)s AND user_id = %(user_id)s
    FOR UPDATE
),
added AS (
    INSERT INTO messages (chat_id, user_id, role, content, file_ids, status, model,
                          prompt_tokens, completion_tokens, parent_id)
    SELECT chat.id, chat.user_id, %(role)s::text, %(content)s::text, %(file_ids)s::bigint[],
           %(status)s::text, %(model)s::text, %(prompt_tokens)s::integer,
           %(completion_tokens)s::integer,
           CASE WHEN %(after_current_leaf)s THEN chat.current_message_id
                ELSE %(parent_id)s::bigint END
    FROM chat
    WHERE %(after_current_leaf)s
       OR %(parent_id)s::bigint IS NULL
       OR EXISTS (SELECT 1 FROM messages AS p
                  WHERE p.id = %(parent_id)s::bigint AND p.chat_id = chat.id)
    RETURNING *
),
"""
    + _COUNT_ADDED
)

_GET_MESSAGE = (
    "SELECT"
    + _message_columns("m")
    + "FROM messages AS m"
    + " WHERE m.id = %(id)s::bigint AND m.chat_id = %(chat_id)s AND m.user_id = %(user_id)s"
)

# Up from ``ending_at`` by parent, at most ``limit`` steps (the outer LIMIT stops
# the recursion), then turned oldest first. Ids are cast to bigint, so one out
# of its range is refused (422) rather than quietly matching nothing.
_BRANCH = (
    """
WITH RECURSIVE up(id, parent_id, depth) AS (
    SELECT m.id, m.parent_id, 0 FROM messages AS m
    WHERE m.id = %(ending_at)s::bigint AND m.chat_id = %(chat_id)s AND m.user_id = %(user_id)s
  UNION ALL
    SELECT m.id, m.parent_id, up.depth + 1
    FROM up JOIN messages AS m ON m.id = up.parent_id
),
page AS (
    SELECT id, depth FROM up WHERE depth >= %(skip)s ORDER BY depth LIMIT %(limit)s
)
SELECT"""
    + _message_columns("m")
    + """FROM page JOIN messages AS m ON m.id = page.id
ORDER BY page.depth DESC
"""
)

# The newest leaf below a message: down by the newest child at each step.
_SELECT_BRANCH = """
WITH RECURSIVE chat AS (
    SELECT id FROM chats WHERE id = %(chat_id)s AND user_id = %(user_id)s FOR UPDATE
),
down(id) AS (
    SELECT m.id FROM messages AS m, chat
    WHERE m.id = %(message_id)s::bigint AND m.chat_id = chat.id
  UNION ALL
    SELECT child.id FROM down,
    LATERAL (SELECT c.id FROM messages AS c
             WHERE c.chat_id = %(chat_id)s AND c.parent_id = down.id
             ORDER BY c.id DESC LIMIT 1) AS child
),
leaf AS (SELECT max(id) AS id FROM down HAVING count(*) > 0)
UPDATE chats SET current_message_id = leaf.id
FROM leaf
WHERE chats.id = %(chat_id)s
RETURNING chats.*
"""

# The rank orders the whole match set, so it is computed for every matching
# row; the headline is costly and only needed for the page, so it is made
# after the LIMIT. Matched words come back wrapped in ** (plain text: the
# content is the user's own, never HTML).
# The best of the caller's newest matches (SEARCH_WINDOW of them): a common word is
# found walking their messages newest first (messages_user_newest_idx), stopping
# after the window; a rare one through the full-text index. Which is which the
# planner tells from the words' statistics, so the query is written inline (not
# from the CTE, which would hide it) and planned for its values each time (see
# ``search``). Either way no more than the window is scored.
_SEARCH_MESSAGES = (
    """
WITH query AS (SELECT websearch_to_tsquery('english', %(query)s::text) AS q),
newest AS (
    SELECT"""
    + _MESSAGE_FIELDS
    + """, search_vector
    FROM messages
    WHERE user_id = %(user_id)s
      AND search_vector @@ websearch_to_tsquery('english', %(query)s::text)
    ORDER BY id DESC
    LIMIT %(window)s
),
hits AS (
    SELECT newest.*, ts_rank(search_vector, query.q) AS rank
    FROM newest, query
    ORDER BY rank DESC, id DESC
    LIMIT %(limit)s
)
SELECT hits.*, chats.title AS chat_title,
       CASE WHEN hits.parent_id IS NULL
           THEN ARRAY(SELECT s.id FROM messages AS s
                      WHERE s.chat_id = hits.chat_id AND s.parent_id IS NULL ORDER BY s.id)
           ELSE ARRAY(SELECT s.id FROM messages AS s
                      WHERE s.chat_id = hits.chat_id AND s.parent_id = hits.parent_id
                      ORDER BY s.id)
       END AS siblings,
       ts_headline('english', hits.content, query.q,
                   'StartSel=**, StopSel=**, MaxWords=30, MinWords=12, MaxFragments=2, '
                   'FragmentDelimiter=" … "') AS snippet
FROM hits JOIN chats ON chats.id = hits.chat_id, query
ORDER BY hits.rank DESC, hits.id DESC
"""
)


# --- answers being written ------------------------------------------------------------

# One user's capped starts take turns from here to the end of their transaction.
# The count is a statement of its own, after the lock: a statement's snapshot is
# taken when it starts, so one that waited for the lock would count too few.
_LOCK_USER_ANSWERS = "SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(%(user_id)s::text))"
_USER_ANSWERS_LOCK_CLASS = 0x72756E  # "run"

_RUNNING_ANSWERS = """
SELECT count(*) AS running, count(*) FILTER (WHERE chat_id = %(chat_id)s) AS here
FROM messages
WHERE user_id = %(user_id)s AND status = 'streaming'
"""

# The chat's row is locked as for any message; the answer goes in only after a
# user message of the chat, and becomes the chat's current leaf. A second
# streaming answer in the chat violates messages_streaming_chat_key.
_INSERT_ANSWER = (
    """
WITH chat AS (
    SELECT id, user_id FROM chats
    WHERE id = %(chat_id)s AND user_id = %(user_id)s
    FOR UPDATE
),
added AS (
    INSERT INTO messages
        (chat_id, user_id, role, content, status, model, owner, parent_id, usage_day)
    SELECT chat.id, chat.user_id, 'assistant', '', 'streaming', %(model)s::text,
           %(owner)s::integer, question.id,
           COALESCE(%(day)s::date, (now() AT TIME ZONE 'UTC')::date)
    FROM chat JOIN messages AS question
        ON question.id = %(question_id)s::bigint
       AND question.chat_id = chat.id
       AND question.user_id = chat.user_id
       AND question.role = 'user'
    RETURNING *
),
"""
    + _COUNT_ADDED
)

_SAVE_PROGRESS = """
UPDATE messages SET content = progress.content
FROM unnest(%(ids)s::bigint[], %(texts)s::text[]) AS progress(id, content)
WHERE messages.id = progress.id AND messages.status = 'streaming'
"""

# The answer counts on its day (the day it was started on, by the caller's clock,
# else the database's UTC day), under that row's lock until the transaction
# ends: parallel starts by one user take turns here, each seeing what the ones
# before it reserved. The counts before this one decide a refusal (which rolls
# the whole start back).
_RESERVE_ANSWER = """
INSERT INTO usage_days AS u (user_id, day, messages)
VALUES (%(user_id)s, COALESCE(%(day)s::date, (now() AT TIME ZONE 'UTC')::date), 1)
ON CONFLICT (user_id, day) DO UPDATE SET messages = u.messages + 1
RETURNING u.messages - 1 AS messages_used, u.prompt_tokens + u.completion_tokens AS tokens_used
"""

# Tokens join the answer's day in the rollup in the same statement (an answer
# ends once: the update needs an owner and clears it).
_COUNT_TOKENS = """
counted AS (
    INSERT INTO usage_days AS u (user_id, day, prompt_tokens, completion_tokens)
    SELECT user_id, usage_day, sum(COALESCE(prompt_tokens, 0)), sum(COALESCE(completion_tokens, 0))
    FROM ended WHERE usage_day IS NOT NULL
    GROUP BY user_id, usage_day
    ON CONFLICT (user_id, day) DO UPDATE
    SET prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens
)
"""

# An answer stopped meanwhile keeps its status but takes its last text. One
# already finished, or failed by the sweep, has no owner: left alone.
_FINISH_ANSWER = (
    """
WITH ended AS (
    UPDATE messages
    SET status = CASE WHEN status = 'streaming' THEN %(status)s::text ELSE status END,
        content = %(content)s::text,
        prompt_tokens = %(prompt_tokens)s::integer,
        completion_tokens = %(completion_tokens)s::integer,
        owner = NULL
    WHERE id = %(id)s::bigint AND owner IS NOT NULL AND status IN ('streaming', 'stopped')
    RETURNING *
),"""
    + _COUNT_TOKENS
    + """SELECT"""
    + _message_columns("ended")
    + "FROM ended"
)

# The owner stays: its process still stores the last text (see _FINISH_ANSWER).
_STOP_ANSWERS = """
WITH stopped AS (
    UPDATE messages SET status = 'stopped'
    WHERE chat_id = %(chat_id)s AND user_id = %(user_id)s AND status = 'streaming'
    RETURNING id
)
SELECT id FROM stopped ORDER BY id
"""

# Live owners are the keys whose advisory lock someone in this database holds
# (two-int4 form: classid is the first key, objid the second, objsubid 2); the
# lock table is read once. The two updates take disjoint rows of one snapshot:
# an answer stopped concurrently is skipped by the first (its status re-checked)
# and not seen by the second, so it keeps its owner until the next sweep.
_FAIL_ORPHANED = (
    """
WITH live AS (
    SELECT objid::bigint AS owner FROM pg_locks
    WHERE locktype = 'advisory'
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = %(lock_class)s
      AND objsubid = 2
      AND granted
),
failed AS (
    UPDATE messages SET status = 'failed', owner = NULL,
        completion_tokens = COALESCE(completion_tokens, ceil(length(content) / 4.0)::integer)
    WHERE owner IS NOT NULL AND status = 'streaming'
      AND NOT EXISTS (SELECT 1 FROM live WHERE live.owner = messages.owner)
    RETURNING id, user_id, usage_day, prompt_tokens, completion_tokens
),
released AS (
    UPDATE messages SET owner = NULL,
        completion_tokens = COALESCE(completion_tokens, ceil(length(content) / 4.0)::integer)
    WHERE owner IS NOT NULL AND status <> 'streaming'
      AND NOT EXISTS (SELECT 1 FROM live WHERE live.owner = messages.owner)
    RETURNING id, user_id, usage_day, prompt_tokens, completion_tokens
),
ended AS (SELECT * FROM failed UNION ALL SELECT * FROM released),"""
    + _COUNT_TOKENS
    + """SELECT id FROM failed ORDER BY id
"""
)

_ANSWER_IN_PROGRESS = (
    "An answer is being written in this chat; wait for it, or stop it, then send again."
)
_TOO_MANY_ANSWERS = "You have as many answers being written as allowed; wait for one to end."
# A cap frees up as soon as one answer ends: seconds, not minutes.
_TOO_MANY_ANSWERS_RETRY_AFTER = 5


@contextmanager
def _one_answer_per_chat() -> Iterator[None]:
    """A second streaming answer in a chat is ``AnswerInProgressError``; inside
    ``translated_errors``, which would make it a plain conflict."""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "messages_streaming_chat_key":
            raise AnswerInProgressError(_ANSWER_IN_PROGRESS) from exc
        raise


_CHAT_ROWS = rows_as(Chat)
_MESSAGE_ROWS = rows_as(Message)
# A found message, and the columns a search adds to it.
_HIT_ROWS = pairs(_MESSAGE_ROWS, dict_row)


class PostgresChatRepository:
    """The ``ChatRepository`` port on the ``chats`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, chat: NewChat) -> Chat:
        added = await fetch_one(
            self._db,
            _INSERT_CHAT,
            {
                "user_id": chat.user_id,
                "title": chat.title,
                "model": chat.model,
                "system_prompt": chat.system_prompt,
            },
            _CHAT_ROWS,
        )
        assert added is not None
        return added

    async def get(self, user_id: int, chat_id: int) -> Chat | None:
        return await fetch_one(self._db, _GET_CHAT, {"id": chat_id, "user_id": user_id}, _CHAT_ROWS)

    async def list(
        self,
        user_id: int,
        *,
        archived: bool,
        query: str | None,
        limit: int,
        after: ChatCursor | None,
    ) -> list[Chat]:
        params: dict[str, object] = {
            "user_id": user_id,
            "archived": archived,
            "query": query,
            "limit": limit,
        }
        if after is None:
            return await fetch_all(self._db, _LIST_CHATS, params, _CHAT_ROWS)
        params |= {
            "after_pinned": after.pinned,
            "after_updated_at": after.updated_at,
            "after_id": after.id,
        }
        return await fetch_all(self._db, _LIST_CHATS_AFTER, params, _CHAT_ROWS)

    async def update(self, user_id: int, chat_id: int, changes: ChatChanges) -> Chat | None:
        return await fetch_one(
            self._db,
            _UPDATE_CHAT,
            {
                "id": chat_id,
                "user_id": user_id,
                "title": changes.title,
                "clear_title": changes.clear_title,
                "system_prompt": changes.system_prompt,
                "clear_system_prompt": changes.clear_system_prompt,
                "pinned": changes.pinned,
                "archived": changes.archived,
                "model": changes.model,
            },
            _CHAT_ROWS,
        )

    async def select_branch(self, user_id: int, chat_id: int, message_id: int) -> Chat | None:
        params = {"user_id": user_id, "chat_id": chat_id, "message_id": message_id}
        return await fetch_one(self._db, _SELECT_BRANCH, params, _CHAT_ROWS)

    async def delete(self, user_id: int, chat_id: int) -> bool:
        deleted = await execute(self._db, _DELETE_CHAT, {"id": chat_id, "user_id": user_id})
        return deleted > 0


class PostgresMessageRepository:
    """The ``MessageRepository`` port on the ``messages`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, message: NewMessage) -> Message:
        added = await fetch_one(self._db, _INSERT_MESSAGE, _message_params(message), _MESSAGE_ROWS)
        if added is None:
            raise NotFoundError("No such chat or message.")
        return added

    async def get(self, user_id: int, chat_id: int, message_id: int) -> Message | None:
        params = {"id": message_id, "chat_id": chat_id, "user_id": user_id}
        return await fetch_one(self._db, _GET_MESSAGE, params, _MESSAGE_ROWS)

    async def branch(
        self, user_id: int, chat_id: int, *, ending_at: int, limit: int, inclusive: bool = True
    ) -> list[Message]:
        params = {
            "user_id": user_id,
            "chat_id": chat_id,
            "ending_at": ending_at,
            "limit": limit,
            "skip": 0 if inclusive else 1,
        }
        return await fetch_all(self._db, _BRANCH, params, _MESSAGE_ROWS)

    async def search(self, user_id: int, query: str, *, limit: int) -> builtins.list[SearchHit]:
        params = {"user_id": user_id, "query": query, "limit": limit, "window": SEARCH_WINDOW}
        # Never a generic plan: the right one depends on how common the words are.
        rows = await fetch_all(self._db, _SEARCH_MESSAGES, params, _HIT_ROWS, prepare=False)
        return [
            SearchHit(message=message, chat_title=row["chat_title"], snippet=row["snippet"])
            for message, row in rows
        ]

    # --- answers being written ------------------------------------------------------

    async def start_answer(self, answer: NewAnswer) -> tuple[Message, Message]:
        # One transaction: a refusal at any step rolls back the question too.
        async with self._db.transaction() as conn:
            with translated_errors(), _one_answer_per_chat():
                if answer.max_running is not None:
                    await _check_running(conn, answer, answer.max_running)
                question = await _question(conn, answer)
                params = {
                    "chat_id": answer.chat_id,
                    "user_id": answer.user_id,
                    "question_id": question.id,
                    "model": answer.model,
                    "owner": answer.owner,
                    "day": None if answer.quota is None else answer.quota.day,
                }
                added = await query_one(conn, _INSERT_ANSWER, params, _MESSAGE_ROWS)
                if added is None:
                    raise NotFoundError("No such chat or message.")
                await _reserve(conn, answer, params)
        return question, added

    async def save_progress(self, texts: Mapping[int, str]) -> None:
        if texts:
            params = {"ids": list(texts), "texts": list(texts.values())}
            await execute(self._db, _SAVE_PROGRESS, params)

    async def finish_answer(
        self,
        message_id: int,
        *,
        status: MessageStatus,
        content: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> Message | None:
        if not status.final:
            raise InvalidInputError("An answer ends complete, failed or stopped.")
        params = {
            "id": message_id,
            "status": status.value,
            "content": content,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }
        return await fetch_one(self._db, _FINISH_ANSWER, params, _MESSAGE_ROWS)

    async def stop_answers(self, user_id: int, chat_id: int) -> builtins.list[int]:
        params = {"user_id": user_id, "chat_id": chat_id}
        return await fetch_all(self._db, _STOP_ANSWERS, params, scalar_row)

    async def fail_orphaned(self) -> builtins.list[int]:
        params = {"lock_class": ANSWER_OWNER_LOCK_CLASS}
        return await fetch_all(self._db, _FAIL_ORPHANED, params, scalar_row)


async def _check_running(conn: psycopg.AsyncConnection[Any], answer: NewAnswer, cap: int) -> None:
    """Refuse a start over the user's cap, after taking the user's turn (held to
    the end of the transaction, so the next start counts this answer)."""
    lock = {"lock_class": _USER_ANSWERS_LOCK_CLASS, "user_id": answer.user_id}
    await conn.execute(_LOCK_USER_ANSWERS, lock)
    params = {"user_id": answer.user_id, "chat_id": answer.chat_id}
    counts = await query_one(conn, _RUNNING_ANSWERS, params, dict_row)
    assert counts is not None
    # Under the user's turn the chat's own answer is known too: the more useful refusal.
    if counts["here"]:
        raise AnswerInProgressError(_ANSWER_IN_PROGRESS)
    if counts["running"] >= cap:
        raise TooManyAnswersError(_TOO_MANY_ANSWERS, retry_after=_TOO_MANY_ANSWERS_RETRY_AFTER)


async def _reserve(
    conn: psycopg.AsyncConnection[Any], answer: NewAnswer, params: Mapping[str, object]
) -> None:
    """Count the answer on its day; refuse it (the caller rolls back) over a quota."""
    used = await query_one(conn, _RESERVE_ANSWER, params, dict_row)
    assert used is not None
    if answer.quota is not None and (refusal := answer.quota.refusal(**used)):
        raise refusal


async def _question(conn: psycopg.AsyncConnection[Any], answer: NewAnswer) -> Message:
    """The answer's question: stored now, as ``add`` stores a message, or read back."""
    if answer.question is not None:
        question = await query_one(
            conn, _INSERT_MESSAGE, _message_params(answer.question), _MESSAGE_ROWS
        )
    else:
        params = {"id": answer.question_id, "chat_id": answer.chat_id, "user_id": answer.user_id}
        question = await query_one(conn, _GET_MESSAGE, params, _MESSAGE_ROWS)
    if question is None or question.role is not MessageRole.USER:
        raise NotFoundError("No such chat or message.")
    return question


def _message_params(message: NewMessage) -> dict[str, object]:
    return {
        "chat_id": message.chat_id,
        "user_id": message.user_id,
        "role": message.role.value,
        "content": message.content,
        "file_ids": list(message.file_ids),
        "status": message.status.value,
        "model": message.model,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "parent_id": message.parent_id,
        "after_current_leaf": message.after_current_leaf,
    }
