"""The ``FileStorage`` port: where the bytes of uploaded files live (a local
folder, S3 or any S3-compatible store), apart from their records.

Keys are the names the service generates (``<32 hex digits>.<ext>``), never
anything a user typed. Writes are atomic: an object is either stored whole or
not at all, so a failed or refused upload leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol


class FileStorage(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> None:
        """Store the bytes ``chunks`` yields under ``key``, described as ``content_type``.

        Consumes ``chunks`` as it writes, so a file is never held whole in memory
        more than once. When iterating ``chunks`` raises, that exception comes out
        unchanged and nothing is stored. ``UnavailableError`` when the store
        cannot be reached or refuses the write.
        """
        ...

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes, streamed in chunks.

        The store is asked when this is awaited, so ``NotFoundError`` (no such
        object) and ``UnavailableError`` come before the first chunk. A failure
        later in the stream is an ``UnavailableError`` from the iterator.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone.

        ``UnavailableError`` when the store cannot be reached.
        """
        ...
