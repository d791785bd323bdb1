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
"""

from __future__ import annotations

import builtins

from psycopg.rows import dict_row

from adapters.postgres._common import execute, fetch_all, fetch_one, pairs, rows_as
from adapters.postgres.pool import Database
from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    Message,
    NewChat,
    NewMessage,
)
from gemini_core.errors import NotFoundError
from gemini_core.ports import SearchHit

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
    prompt_tokens, completion_tokens, created_at, parent_id
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
_SEARCH_MESSAGES = (
    """
WITH query AS (SELECT websearch_to_tsquery('english', %(query)s::text) AS q),
hits AS (
    SELECT"""
    + _MESSAGE_FIELDS
    + """, ts_rank(search_vector, query.q) AS rank
    FROM messages, query
    WHERE user_id = %(user_id)s AND search_vector @@ query.q
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
        added = await fetch_one(
            self._db,
            _INSERT_MESSAGE,
            {
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
            },
            _MESSAGE_ROWS,
        )
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
        params = {"user_id": user_id, "query": query, "limit": limit}
        rows = await fetch_all(self._db, _SEARCH_MESSAGES, params, _HIT_ROWS)
        return [
            SearchHit(message=message, chat_title=row["chat_title"], snippet=row["snippet"])
            for message, row in rows
        ]
