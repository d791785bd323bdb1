"""The ``FileUploadRepository`` port in memory."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from adapters.memory.store import StoreRepository, check_page
from gemini_core.entities import FileUpload, NewFileUpload
from gemini_core.errors import ConflictError, InvalidInputError

__all__ = ["InMemoryFileUploadRepository"]


class InMemoryFileUploadRepository(StoreRepository):
    async def add(self, upload: NewFileUpload) -> FileUpload:
        self._store.require_user(upload.user_id)
        if upload.file_size < 0:
            raise InvalidInputError("A value is out of the allowed range.")
        if any(f.filename == upload.filename for f in self._store.files.values()):
            raise ConflictError("That filename is already taken.", field="filename")
        stored = FileUpload(
            id=self._store.next_id("files"),
            user_id=upload.user_id,
            filename=upload.filename,
            original_filename=upload.original_filename,
            content_type=upload.content_type,
            file_size=upload.file_size,
            created_at=self._now(),
        )
        self._store.files[stored.id] = stored
        return stored

    async def add_within_quota(self, upload: NewFileUpload, *, quota: int) -> FileUpload | None:
        self._store.require_user(upload.user_id)
        used = sum(f.file_size for f in self._store.files.values() if f.user_id == upload.user_id)
        if used + upload.file_size > quota:
            return None
        # ``add`` never awaits, so the check and the insert are one step on the loop.
        return await self.add(upload)

    async def get(self, user_id: int, file_id: int) -> FileUpload | None:
        upload = self._store.files.get(file_id)
        return upload if upload is not None and upload.user_id == user_id else None

    async def get_by_filename(self, filename: str) -> FileUpload | None:
        return next((f for f in self._store.files.values() if f.filename == filename), None)

    async def list(
        self, user_id: int, *, limit: int, before: int | None
    ) -> builtins.list[FileUpload]:
        check_page(limit=limit)
        mine = sorted(
            (
                f
                for f in self._store.files.values()
                if f.user_id == user_id and (before is None or f.id < before)
            ),
            key=lambda f: f.id,
            reverse=True,
        )
        return mine[:limit]

    async def delete(self, user_id: int, file_id: int) -> FileUpload | None:
        upload = await self.get(user_id, file_id)
        if upload is not None:
            del self._store.files[file_id]
        return upload

    async def total_size(self, user_id: int) -> int:
        return sum(f.file_size for f in self._store.files.values() if f.user_id == user_id)

    async def owned(self, user_id: int, file_ids: Sequence[int]) -> builtins.list[FileUpload]:
        found = (self._store.files.get(file_id) for file_id in file_ids)
        return [f for f in found if f is not None and f.user_id == user_id]
