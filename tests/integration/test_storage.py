"""The ``FileStorage`` adapters against a real local folder, memory, and a real
HTTP S3 endpoint (moto's server): one contract for all three."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest
from obstore.store import MemoryStore

from adapters.storage import (
    SINGLE_PUT_LIMIT,
    ObjectFileStorage,
    local_file_storage,
    s3_file_storage,
)
from gemini_core.errors import NotFoundError, UnavailableError

from .s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server, s3_server  # noqa: F401

KEY = "0123456789abcdef0123456789abcdef.png"


@dataclass
class Backend:
    name: str
    storage: ObjectFileStorage
    keys: Callable[[], list[str]]
    unfinished: Callable[[], list[str]] = lambda: []


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        folder = tmp_path / "uploads"
        return Backend(
            "local",
            local_file_storage(folder),
            lambda: sorted(os.listdir(folder)) if folder.exists() else [],
        )
    if request.param == "memory":
        store = MemoryStore()
        return Backend(
            "memory",
            ObjectFileStorage(lambda: store),
            lambda: sorted(meta["path"] for batch in obstore.list(store) for meta in batch),
        )
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    storage = s3_file_storage(
        bucket=bucket,
        endpoint_url=server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    return Backend(
        "s3",
        storage,
        lambda: server.keys(bucket),
        lambda: server.unfinished_uploads(bucket),
    )


class Refused(Exception):
    """What an upload's own chunks raise, say at its size limit."""


async def chunks(data: bytes, *, size: int = 64 * 1024, fail: bool = False) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
    if fail:
        raise Refused


async def read_all(storage: ObjectFileStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in await storage.open(key)])


@pytest.mark.parametrize("size", [1, 1000, SINGLE_PUT_LIMIT, SINGLE_PUT_LIMIT + 300_000])
async def test_bytes_come_back_as_stored(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    await backend.storage.put(KEY, chunks(data), content_type="image/png")
    assert backend.keys() == [KEY]
    assert await read_all(backend.storage, KEY) == data


async def test_a_big_file_is_read_in_several_chunks(backend: Backend) -> None:
    data = os.urandom(2 * 1024 * 1024)
    await backend.storage.put(KEY, chunks(data), content_type="image/png")
    pieces = [chunk async for chunk in await backend.storage.open(KEY)]
    if backend.name != "memory":  # memory holds it whole anyway
        assert len(pieces) > 1
    assert b"".join(pieces) == data


@pytest.mark.parametrize("size", [1000, SINGLE_PUT_LIMIT + 300_000], ids=["one-put", "multipart"])
async def test_when_the_chunks_fail_nothing_is_stored(backend: Backend, size: int) -> None:
    with pytest.raises(Refused):
        await backend.storage.put(KEY, chunks(os.urandom(size), fail=True), content_type="x/y")
    assert backend.keys() == []
    assert backend.unfinished() == []
    with pytest.raises(NotFoundError):
        await backend.storage.open(KEY)


async def test_delete_removes_and_is_idempotent(backend: Backend) -> None:
    await backend.storage.put(KEY, chunks(b"abc"), content_type="image/png")
    await backend.storage.delete(KEY)
    assert backend.keys() == []
    await backend.storage.delete(KEY)
    with pytest.raises(NotFoundError):
        await backend.storage.open(KEY)


@pytest.mark.parametrize("key", ["../escape.png", "a/b.png", "", ".hidden", "/abs.png"])
async def test_keys_are_plain_names_only(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        await backend.storage.put(key, chunks(b"abc"), content_type="image/png")
    with pytest.raises(NotFoundError):
        await backend.storage.open(key)
    await backend.storage.delete(key)  # nothing to do, and no error
    assert backend.keys() == []


def test_the_local_folder_is_made_on_first_use(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet"
    storage = local_file_storage(folder)
    assert not folder.exists()
    del storage


async def test_the_local_folder_and_its_parents_appear_on_the_first_write(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet"
    storage = local_file_storage(folder)
    await storage.put(KEY, chunks(b"abc"), content_type="image/png")
    assert (folder / KEY).read_bytes() == b"abc"


async def test_objects_carry_their_content_type_on_s3(s3_server: S3Server) -> None:  # noqa: F811
    bucket = s3_server.new_bucket()
    storage = s3_file_storage(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    await storage.put(KEY, chunks(b"abc"), content_type="image/png")
    head = s3_server.client().head_object(Bucket=bucket, Key=KEY)
    assert head["ContentType"] == "image/png"


async def test_an_unreachable_s3_is_unavailable_quickly() -> None:
    storage = s3_file_storage(
        bucket="uploads",
        endpoint_url="http://127.0.0.1:9",  # discard: nothing listens
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    async with asyncio.timeout(10):  # a refused connection is not retried for long
        with pytest.raises(UnavailableError):
            await storage.put(KEY, chunks(b"abc"), content_type="image/png")
        with pytest.raises(UnavailableError):
            await storage.open(KEY)
        with pytest.raises(UnavailableError):
            await storage.delete(KEY)


async def test_a_missing_bucket_is_unavailable_for_writes(s3_server: S3Server) -> None:  # noqa: F811
    storage = s3_file_storage(
        bucket="no-such-bucket",
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    with pytest.raises(UnavailableError):
        await storage.put(KEY, chunks(b"abc"), content_type="image/png")
