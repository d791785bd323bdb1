"""Uploaded files' records in PostgreSQL (the bytes live in file storage).

``add_within_quota`` is the one method that needs two statements: it locks
the owner's ``users`` row first, so concurrent uploads by one user take turns
and each sees the others' committed rows when it sums the sizes (a single
statement would sum from a snapshot taken before the lock was granted).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from psycopg.rows import scalar_row

from adapters.postgres._common import fetch_all, fetch_one, query_one, rows_as, translated_errors
from adapters.postgres.pool import Database
from gemini_core.entities import FileUpload, NewFileUpload
from gemini_core.errors import NotFoundError

_COLUMNS = """
    id, user_id, filename, original_filename, content_type, file_size, created_at
"""

_INSERT = (
    """
INSERT INTO file_uploads (user_id, filename, original_filename, content_type, file_size)
VALUES (%(user_id)s, %(filename)s, %(original_filename)s, %(content_type)s, %(file_size)s)
RETURNING"""
    + _COLUMNS
)

# Taken by add_within_quota; ordinary updates of the user wait a moment, the
# foreign-key checks of other inserts (FOR KEY SHARE) do not.
_LOCK_OWNER = "SELECT id FROM users WHERE id = %(user_id)s FOR NO KEY UPDATE"

_INSERT_WITHIN_QUOTA = (
    """
INSERT INTO file_uploads (user_id, filename, original_filename, content_type, file_size)
SELECT %(user_id)s::bigint, %(filename)s::text, %(original_filename)s::text,
       %(content_type)s::text, %(file_size)s::bigint
WHERE (SELECT COALESCE(sum(file_size), 0) FROM file_uploads WHERE user_id = %(user_id)s::bigint)
      + %(file_size)s::bigint <= %(quota)s::bigint
RETURNING"""
    + _COLUMNS
)

_GET = "SELECT" + _COLUMNS + "FROM file_uploads WHERE id = %(id)s AND user_id = %(user_id)s"

_GET_BY_FILENAME = "SELECT" + _COLUMNS + "FROM file_uploads WHERE filename = %(filename)s"

_LIST = (
    "SELECT"
    + _COLUMNS
    + """FROM file_uploads
WHERE user_id = %(user_id)s AND id < COALESCE(%(before)s::bigint, 9223372036854775807)
ORDER BY id DESC
LIMIT %(limit)s
"""
)

_DELETE = (
    "DELETE FROM file_uploads WHERE id = %(id)s AND user_id = %(user_id)s RETURNING" + _COLUMNS
)

# sum(bigint) is numeric; the total of one user's files fits a bigint.
_TOTAL_SIZE = """
SELECT COALESCE(sum(file_size), 0)::bigint AS total FROM file_uploads WHERE user_id = %(user_id)s
"""

# One output row per id asked, in the order asked, keeping only the user's.
_OWNED = """
SELECT f.id, f.user_id, f.filename, f.original_filename, f.content_type, f.file_size, f.created_at
FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS asked (id, position)
JOIN file_uploads AS f ON f.id = asked.id
WHERE f.user_id = %(user_id)s
ORDER BY asked.position
"""


_FILE_ROWS = rows_as(FileUpload)


class PostgresFileUploadRepository:
    """The ``FileUploadRepository`` port on the ``file_uploads`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, upload: NewFileUpload) -> FileUpload:
        added = await fetch_one(
            self._db,
            _INSERT,
            {
                "user_id": upload.user_id,
                "filename": upload.filename,
                "original_filename": upload.original_filename,
                "content_type": upload.content_type,
                "file_size": upload.file_size,
            },
            _FILE_ROWS,
        )
        assert added is not None
        return added

    async def add_within_quota(self, upload: NewFileUpload, *, quota: int) -> FileUpload | None:
        params = {
            "user_id": upload.user_id,
            "filename": upload.filename,
            "original_filename": upload.original_filename,
            "content_type": upload.content_type,
            "file_size": upload.file_size,
            "quota": quota,
        }
        async with self._db.transaction() as conn:
            with translated_errors():
                if await query_one(conn, _LOCK_OWNER, params, scalar_row) is None:
                    raise NotFoundError("A record this refers to does not exist.")
                return await query_one(conn, _INSERT_WITHIN_QUOTA, params, _FILE_ROWS)

    async def get(self, user_id: int, file_id: int) -> FileUpload | None:
        return await fetch_one(self._db, _GET, {"id": file_id, "user_id": user_id}, _FILE_ROWS)

    async def get_by_filename(self, filename: str) -> FileUpload | None:
        return await fetch_one(self._db, _GET_BY_FILENAME, {"filename": filename}, _FILE_ROWS)

    async def list(self, user_id: int, *, limit: int, before: int | None) -> list[FileUpload]:
        params = {"user_id": user_id, "limit": limit, "before": before}
        return await fetch_all(self._db, _LIST, params, _FILE_ROWS)

    async def delete(self, user_id: int, file_id: int) -> FileUpload | None:
        return await fetch_one(self._db, _DELETE, {"id": file_id, "user_id": user_id}, _FILE_ROWS)

    async def total_size(self, user_id: int) -> int:
        total = await fetch_one(self._db, _TOTAL_SIZE, {"user_id": user_id}, scalar_row)
        assert total is not None
        return int(total)

    async def owned(self, user_id: int, file_ids: Sequence[int]) -> builtins.list[FileUpload]:
        if not file_ids:
            return []
        params = {"user_id": user_id, "ids": list(file_ids)}
        return await fetch_all(self._db, _OWNED, params, _FILE_ROWS)
