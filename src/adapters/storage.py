"""The ``FileStorage`` port on obstore: a local folder, S3 or any S3-compatible
store (MinIO, R2), all through one class (and memory, for tests:
``adapters.memory.memory_file_storage``).

Writes are atomic in every store obstore offers: a local file is written
under a temporary name and renamed; an S3 object appears only when its single
PUT, or its multipart upload, completes (a failed multipart upload is
aborted). A file up to ``SINGLE_PUT_LIMIT`` goes in one request; a larger one
is streamed as a multipart upload, so it is never held whole in memory.

Incomplete multipart uploads cut off by a crash are invisible but billed: give
the bucket a lifecycle rule that aborts them after a day.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import LocalStore, S3Store

from gemini_core.errors import NotFoundError, UnavailableError

if TYPE_CHECKING:
    from obstore import Attributes
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

__all__ = [
    "ObjectFileStorage",
    "local_file_storage",
    "s3_file_storage",
]

log = logging.getLogger(__name__)

STORAGE_DOWN = "File storage is unavailable; try again shortly."
# S3's smallest multipart part; below it a file costs one PUT.
SINGLE_PUT_LIMIT = 5 * 1024 * 1024
# Parts of a multipart upload in flight at once, each SINGLE_PUT_LIMIT in memory.
PUT_CONCURRENCY = 2
READ_CHUNK = 256 * 1024

# Keys are generated names; anything else is a bug, never a path to follow.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# What obstore raises for a store it cannot use: its own errors, and OS errors
# (a full disk, a folder it may not write) for the local store.
_STORE_ERRORS = (ObstoreError, OSError)


class _Source:
    """Wraps the caller's chunks to tell their failures from the store's."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._first = first
        self._rest = rest
        self.failure: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._first
        try:
            async for chunk in self._rest:
                yield chunk
        except BaseException as exc:
            self.failure = exc
            raise


class ObjectFileStorage:
    """The ``FileStorage`` port on any obstore store.

    The store is built on first use, so building the application creates no
    folder and touches no network.
    """

    def __init__(
        self, make_store: Callable[[], ObjectStore], *, content_types: bool = False
    ) -> None:
        self._make_store = make_store
        self._store: ObjectStore | None = None
        # Only object stores keep a content type; the local one refuses attributes.
        self._content_types = content_types

    def _opened(self) -> ObjectStore:
        if self._store is None:
            self._store = self._make_store()
        return self._store

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a storage key: {key!r}")
        attributes: Attributes | None = (
            {"Content-Type": content_type} if self._content_types else None
        )
        iterator = aiter(chunks)
        first = bytearray()
        async for chunk in iterator:
            first += chunk
            if len(first) >= SINGLE_PUT_LIMIT:
                break
        else:
            try:
                await obstore.put_async(
                    self._opened(), key, first, attributes=attributes, use_multipart=False
                )
            except _STORE_ERRORS as exc:
                raise _unavailable("store", key, exc) from exc
            return
        source = _Source(bytes(first), iterator)
        del first
        try:
            await obstore.put_async(
                self._opened(),
                key,
                aiter(source),
                attributes=attributes,
                chunk_size=SINGLE_PUT_LIMIT,
                max_concurrency=PUT_CONCURRENCY,
            )
        except _STORE_ERRORS as exc:
            if exc is source.failure:
                raise
            raise _unavailable("store", key, exc) from exc

    async def open(self, key: str) -> AsyncIterator[bytes]:
        if not _KEY.fullmatch(key):
            raise NotFoundError("No such file.")
        try:
            result = await obstore.get_async(self._opened(), key)
        except FileNotFoundError as exc:
            raise NotFoundError("No such file.") from exc
        except _STORE_ERRORS as exc:
            raise _unavailable("read", key, exc) from exc
        return _streamed(key, result.stream(min_chunk_size=READ_CHUNK))

    async def delete(self, key: str) -> None:
        if not _KEY.fullmatch(key):
            return
        try:
            await obstore.delete_async(self._opened(), key)
        except FileNotFoundError:
            return  # the local store says so; S3 does not
        except _STORE_ERRORS as exc:
            raise _unavailable("delete", key, exc) from exc


async def _streamed(key: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except _STORE_ERRORS as exc:
        raise _unavailable("read", key, exc) from exc


def _unavailable(action: str, key: str, exc: BaseException) -> UnavailableError:
    # The store's message names the bucket or folder: for the log, not the caller.
    log.warning("file storage could not %s %s: %s", action, key, exc)
    return UnavailableError(STORAGE_DOWN)


def local_file_storage(directory: Path) -> ObjectFileStorage:
    """Files in ``directory``, created (with its parents) on first use."""
    return ObjectFileStorage(lambda: LocalStore(directory, mkdir=True))


def s3_file_storage(
    *,
    bucket: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> ObjectFileStorage:
    """Objects in an S3 bucket, or one of any S3-compatible store at ``endpoint_url``.

    Credentials left out come from the environment or the instance role, as
    the AWS tools find them. Plain ``http://`` is allowed only when the
    endpoint says so (a local MinIO, a test server).
    """
    client: ClientConfig = {
        "connect_timeout": timedelta(seconds=5),
        # Covers a whole request, streaming included: room for a slow reader.
        "timeout": timedelta(minutes=5),
        "allow_http": bool(endpoint_url and endpoint_url.startswith("http://")),
    }
    retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
    config: S3Config = {}
    if endpoint_url is not None:
        config["endpoint"] = endpoint_url
    if region is not None:
        config["region"] = region
    if access_key_id is not None and secret_access_key is not None:
        config["access_key_id"] = access_key_id
        config["secret_access_key"] = secret_access_key

    def make_store() -> ObjectStore:
        return S3Store(bucket, config=config, client_options=client, retry_config=retry)

    return ObjectFileStorage(make_store, content_types=True)
