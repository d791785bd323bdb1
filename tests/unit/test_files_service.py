"""The upload use cases on in-memory records and an in-memory object store:
what is accepted, how early the rest is refused, and that the bytes and the
records never drift apart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import obstore
import pytest
from obstore.store import MemoryStore

from adapters.memory import FakeClock, InMemoryCache, InMemoryRepositories, RecordingTelemetry
from adapters.storage import ObjectFileStorage
from gemini_core.entities import FileUpload, NewFileUpload, NewUser, User
from gemini_core.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from gemini_core.files import (
    FALLBACK_NAME,
    MAX_NAME_LENGTH,
    UploadRules,
    UploadService,
    clean_filename,
)
from gemini_core.links import FileLinks
from tests.images import HTML, IMAGES, PDF, SVG, TEXT, gif, jpeg, png

LIMIT = 64 * 1024


class Feed:
    """An upload's chunks, counting how many bytes the service pulled."""

    def __init__(self, data: bytes, *, chunk: int = 1024, repeat: int = 1) -> None:
        self._data = data
        self._chunk = chunk
        self._repeat = repeat
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self._repeat):
            for start in range(0, len(self._data), self._chunk):
                piece = self._data[start : start + self._chunk]
                self.pulled += len(piece)
                await asyncio.sleep(0)  # let concurrent uploads interleave
                yield piece


@dataclass
class World:
    repos: InMemoryRepositories
    store: MemoryStore
    service: UploadService
    ann: User
    bob: User
    admin: User

    def keys(self) -> list[str]:
        return sorted(meta["path"] for batch in obstore.list(self.store) for meta in batch)

    async def read(self, viewer: User, filename: str) -> bytes:
        opened = await self.service.open_file(viewer, filename)
        return b"".join([chunk async for chunk in opened.chunks])

    def with_files(self, files: object) -> UploadService:
        return UploadService(
            telemetry=RecordingTelemetry(),
            files=files,  # type: ignore[arg-type]
            storage=ObjectFileStorage(lambda: self.store),
            rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
        )


@pytest.fixture
async def world() -> World:
    repos = InMemoryRepositories(clock=FakeClock())
    store = MemoryStore()
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=repos.files,
        storage=ObjectFileStorage(lambda: store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
    )
    users = [
        await repos.users.add(
            NewUser(email=f"{name}@example.com", username=name, password_hash="h", is_admin=admin)
        )
        for name, admin in (("ann", False), ("bob", False), ("root", True))
    ]
    return World(repos, store, service, *users)


async def upload(world: World, data: bytes | Feed, name: str | None = "photo.png") -> FileUpload:
    feed = data if isinstance(data, Feed) else Feed(data)
    return await world.service.upload_file(world.ann, feed, original_name=name)


# --- accepted uploads ----------------------------------------------------------


@pytest.mark.parametrize("content_type", IMAGES)
async def test_an_image_is_stored_under_a_new_name_with_its_real_extension(
    world: World, content_type: str
) -> None:
    build, extension = IMAGES[content_type]
    data = build(3, 2)
    stored = await upload(world, data, name="holiday.bmp")
    assert stored.filename.endswith(extension)
    assert len(stored.filename) == 32 + len(extension)
    assert (stored.content_type, stored.file_size) == (content_type, len(data))
    assert stored.original_filename == "holiday.bmp"  # kept as said, only as metadata
    assert world.keys() == [stored.filename]
    assert await world.read(world.ann, stored.filename) == data
    assert await world.repos.files.get(world.ann.id, stored.id) == stored


async def test_names_are_fresh_for_every_upload(world: World) -> None:
    names = {(await upload(world, png())).filename for _ in range(5)}
    assert len(names) == 5


async def test_a_header_split_over_tiny_chunks_is_still_read(world: World) -> None:
    data = png(7, 9)
    stored = await upload(world, Feed(data, chunk=3))
    assert await world.read(world.ann, stored.filename) == data


async def test_a_jpeg_frame_behind_long_metadata_is_found(world: World) -> None:
    data = jpeg(800, 600, metadata=40_000)
    stored = await upload(world, Feed(data, chunk=4096))
    assert (stored.content_type, stored.file_size) == ("image/jpeg", len(data))


async def test_the_limit_itself_is_allowed(world: World) -> None:
    data = png()
    exact = data + b"\x00" * (LIMIT - len(data))
    assert (await upload(world, exact)).file_size == LIMIT


# --- refused uploads -----------------------------------------------------------


@pytest.mark.parametrize("data", [TEXT, HTML, SVG, PDF, b"\x89PNG", b"x"], ids=repr)
async def test_fakes_are_refused_on_their_first_bytes(world: World, data: bytes) -> None:
    feed = Feed(data, repeat=1000)
    with pytest.raises(UnsupportedMediaTypeError):
        await upload(world, feed, name="innocent.png")
    assert feed.pulled <= max(len(data), 64)
    assert world.keys() == []
    assert await world.repos.files.total_size(world.ann.id) == 0


async def test_an_empty_file_is_invalid(world: World) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await upload(world, b"")
    assert caught.value.field == "file"


async def test_a_bomb_is_refused_from_its_header(world: World) -> None:
    feed = Feed(png(100_000, 100_000) + b"\x00" * LIMIT, chunk=4096)
    with pytest.raises(InvalidInputError) as caught:
        await upload(world, feed)
    assert caught.value.field == "file"
    assert "100000 x 100000" in caught.value.detail
    assert feed.pulled == 4096
    assert world.keys() == []


async def test_a_zero_sized_canvas_is_not_an_image(world: World) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        await upload(world, gif(0, 10))


async def test_an_oversized_file_stops_at_the_limit(world: World) -> None:
    feed = Feed(png() + b"\x00" * 1024, chunk=1024, repeat=1000)
    with pytest.raises(PayloadTooLargeError) as caught:
        await upload(world, feed)
    assert caught.value.detail == "The file is larger than the limit of 64 KiB."
    assert feed.pulled <= LIMIT + 2048
    assert world.keys() == []
    assert await world.repos.files.list(world.ann.id, limit=10, before=None) == []


# --- quota ---------------------------------------------------------------------


async def test_a_full_quota_refuses_before_reading(world: World) -> None:
    await world.repos.files.add(
        NewFileUpload(
            user_id=world.ann.id,
            filename="f" * 32 + ".png",
            original_filename="big.png",
            content_type="image/png",
            file_size=10 * LIMIT,
        )
    )
    feed = Feed(png())
    with pytest.raises(PayloadTooLargeError) as caught:
        await upload(world, feed)
    assert "quota" in caught.value.detail
    assert feed.pulled == 0


async def test_the_quota_left_bounds_the_next_upload(world: World) -> None:
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=LIMIT + 100),
    )
    first = png() + b"\x00" * (LIMIT - len(png()))
    await service.upload_file(world.ann, Feed(first), original_name="a.png")
    feed = Feed(png() + b"\x00" * 1000)
    with pytest.raises(PayloadTooLargeError) as caught:
        await service.upload_file(world.ann, feed, original_name="b.png")
    assert "quota" in caught.value.detail
    assert len(world.keys()) == 1
    # Bob has a quota of his own.
    await service.upload_file(world.bob, Feed(png()), original_name="c.png")


async def test_of_racing_uploads_only_those_within_the_quota_are_kept(world: World) -> None:
    data = png() + b"\x00" * (LIMIT - 200)
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=2 * len(data)),
    )
    results = await asyncio.gather(
        *(
            service.upload_file(world.ann, Feed(data, chunk=4096), original_name=f"{n}.png")
            for n in range(5)
        ),
        return_exceptions=True,
    )
    kept = [r for r in results if isinstance(r, FileUpload)]
    refused = [r for r in results if isinstance(r, PayloadTooLargeError)]
    assert (len(kept), len(refused)) == (2, 3)
    assert world.keys() == sorted(f.filename for f in kept)
    assert await world.repos.files.total_size(world.ann.id) == 2 * len(data)


# --- consistency between bytes and records -------------------------------------


class FailingRecords:
    """The real in-memory records, except that recording a new file fails."""

    def __init__(self, files: object) -> None:
        self._files = files

    def __getattr__(self, name: str) -> object:
        return getattr(self._files, name)

    async def add_within_quota(self, upload: NewFileUpload, *, quota: int) -> FileUpload | None:
        raise UnavailableError("The database is unavailable; try again shortly.")


async def test_bytes_are_removed_when_the_record_cannot_be_written(world: World) -> None:
    service = world.with_files(FailingRecords(world.repos.files))
    with pytest.raises(UnavailableError):
        await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    assert world.keys() == []


class BrokenStorage:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def put(self, key: str, chunks: object, *, content_type: str) -> None:
        raise UnavailableError("File storage is unavailable; try again shortly.")

    async def open(self, key: str) -> AsyncIterator[bytes]:
        raise UnavailableError("File storage is unavailable; try again shortly.")

    async def delete(self, key: str) -> None:
        self.deleted.append(key)
        raise UnavailableError("File storage is unavailable; try again shortly.")


async def test_no_record_is_written_when_the_store_fails(world: World) -> None:
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=BrokenStorage(),
        rules=UploadRules(),
    )
    with pytest.raises(UnavailableError):
        await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    assert await world.repos.files.total_size(world.ann.id) == 0


async def test_delete_removes_the_record_then_the_bytes(world: World) -> None:
    stored = await upload(world, png())
    assert await world.service.delete_file(world.ann, stored.id) is None
    assert world.keys() == []
    assert await world.repos.files.get(world.ann.id, stored.id) is None
    with pytest.raises(NotFoundError):
        await world.service.delete_file(world.ann, stored.id)


async def test_bytes_that_cannot_be_removed_are_logged_not_raised(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await upload(world, png())
    storage = BrokenStorage()
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=storage,
        rules=UploadRules(),
    )
    with caplog.at_level(logging.ERROR, logger="gemini_core.files"):
        await service.delete_file(world.ann, stored.id)
    assert storage.deleted == [stored.filename]
    assert await world.repos.files.get(world.ann.id, stored.id) is None
    assert stored.filename in caplog.text


# --- reading and privacy -------------------------------------------------------


async def test_only_the_owner_or_an_admin_reads_a_file(world: World) -> None:
    data = png(2, 2)
    stored = await upload(world, data)
    assert await world.read(world.admin, stored.filename) == data
    with pytest.raises(NotFoundError):
        await world.service.open_file(world.bob, stored.filename)
    demoted = replace(world.admin, is_admin=False)
    with pytest.raises(NotFoundError):
        await world.service.open_file(demoted, stored.filename)
    with pytest.raises(NotFoundError):
        await world.service.delete_file(world.bob, stored.id)
    with pytest.raises(NotFoundError):
        await world.service.delete_file(world.admin, stored.id)  # admins read, not delete


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "x.png", "A" * 32 + ".png", "0" * 32 + ".svg", "0" * 32 + ".png/.."],
)
async def test_names_the_service_never_makes_are_not_found(world: World, name: str) -> None:
    with pytest.raises(NotFoundError):
        await world.service.open_file(world.ann, name)


async def test_a_record_without_bytes_is_not_found(world: World) -> None:
    stored = await upload(world, png())
    await obstore.delete_async(world.store, stored.filename)
    with pytest.raises(NotFoundError):
        await world.service.open_file(world.ann, stored.filename)


# --- listing -------------------------------------------------------------------


async def test_files_are_listed_newest_first_a_page_at_a_time(world: World) -> None:
    mine = [await upload(world, png(), name=f"{n}.png") for n in range(5)]
    await world.service.upload_file(world.bob, Feed(png()), original_name="bob.png")
    first = await world.service.list_files(world.ann, limit=2, cursor=None)
    assert [f.id for f in first.items] == [mine[4].id, mine[3].id]
    assert first.next_cursor is not None
    second = await world.service.list_files(world.ann, limit=2, cursor=first.next_cursor)
    assert [f.id for f in second.items] == [mine[2].id, mine[1].id]
    assert second.next_cursor is not None
    last = await world.service.list_files(world.ann, limit=2, cursor=second.next_cursor)
    assert ([f.id for f in last.items], last.next_cursor) == ([mine[0].id], None)
    exact = await world.service.list_files(world.ann, limit=5, cursor=None)
    assert (len(exact.items), exact.next_cursor) == (5, None)


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_a_limit_out_of_range_is_invalid(world: World, limit: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await world.service.list_files(world.ann, limit=limit, cursor=None)
    assert caught.value.field == "limit"


async def test_a_forged_cursor_is_invalid(world: World) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await world.service.list_files(world.ann, limit=10, cursor="not-a-cursor")
    assert caught.value.field == "cursor"


# --- original names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("cat.png", "cat.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.png", "evil.png"),
        ("C:\\Users\\ann\\Pictures\\me.jpg", "me.jpg"),
        ('say "cheese".png', "say cheese.png"),
        ("tab\there\r\nnew\x00line.png", "tab here newline.png"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),  # a right-to-left override hides .exe
        ("  spaced    out  .png ", "spaced out .png"),
        ("...hidden", "hidden"),
        ("Cafe\u0301.png", "Café.png"),  # composed
        ("日本語の写真.webp", "日本語の写真.webp"),
        ("..", FALLBACK_NAME),
        ("/", FALLBACK_NAME),
        ("", FALLBACK_NAME),
        (None, FALLBACK_NAME),
        ("\x00\x01\x02", FALLBACK_NAME),
    ],
)
def test_original_names_are_cleaned(given: str | None, kept: str) -> None:
    assert clean_filename(given) == kept


def test_long_names_are_cut_but_keep_their_extension() -> None:
    cleaned = clean_filename("a" * 1000 + ".jpeg")
    assert len(cleaned) == MAX_NAME_LENGTH
    assert cleaned.endswith("a.jpeg")
    no_extension = clean_filename("b" * 1000)
    assert no_extension == "b" * MAX_NAME_LENGTH


# --- the record cache ----------------------------------------------------------


class CountingFiles:
    """The file records, counting look-ups by stored name."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.lookups = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def get_by_filename(self, filename: str) -> FileUpload | None:
        self.lookups += 1
        return await self._inner.get_by_filename(filename)  # type: ignore[attr-defined, no-any-return]


class BrokenCache:
    async def get(self, key: str) -> bytes | None:
        raise UnavailableError("cache down")

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        raise UnavailableError("cache down")

    async def delete(self, key: str) -> None:
        raise UnavailableError("cache down")


async def test_records_are_served_from_the_cache_and_dropped_on_delete(world: World) -> None:
    from adapters.memory import InMemoryCache

    files = CountingFiles(world.repos.files)
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=files,  # type: ignore[arg-type]
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
        cache=InMemoryCache(clock=FakeClock()),
    )
    stored = await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    for viewer in (world.ann, world.ann, world.admin):
        opened = await service.open_file(viewer, stored.filename)
        assert opened.upload == stored
    assert files.lookups == 1
    with pytest.raises(NotFoundError):
        await service.open_file(world.bob, stored.filename)  # the cache keeps the owner check
    await service.delete_file(world.ann, stored.id)
    with pytest.raises(NotFoundError):
        await service.open_file(world.ann, stored.filename)
    assert files.lookups == 2


async def test_a_broken_cache_only_costs_a_lookup(world: World) -> None:
    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
        cache=BrokenCache(),  # type: ignore[arg-type]
    )
    stored = await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    assert (await service.open_file(world.ann, stored.filename)).upload == stored
    await service.delete_file(world.ann, stored.id)


async def test_a_record_cached_by_one_process_and_deleted_by_another_is_a_plain_miss(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes, each with a cache of its own, over one database and store."""
    from adapters.memory import InMemoryCache

    def process() -> UploadService:
        return UploadService(
            telemetry=RecordingTelemetry(),
            files=world.repos.files,
            storage=ObjectFileStorage(lambda: world.store),
            rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
            cache=InMemoryCache(clock=FakeClock()),
        )

    first, second = process(), process()
    stored = await first.upload_file(world.ann, Feed(png()), original_name="a.png")
    await second.open_file(world.ann, stored.filename)  # now in the second's cache
    await first.delete_file(world.ann, stored.id)
    with caplog.at_level(logging.WARNING, logger="gemini_core.files"):
        for _ in range(3):
            with pytest.raises(NotFoundError):
                await second.open_file(world.ann, stored.filename)
    assert caplog.records == []


async def test_bytes_missing_behind_a_live_record_are_still_reported(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.memory import InMemoryCache

    service = UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
        cache=InMemoryCache(clock=FakeClock()),
    )
    stored = await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    await service.open_file(world.ann, stored.filename)  # cached
    obstore.delete(world.store, stored.filename)
    with caplog.at_level(logging.ERROR, logger="gemini_core.files"), pytest.raises(NotFoundError):
        await service.open_file(world.ann, stored.filename)
    assert [r.getMessage() for r in caplog.records] == [
        f"file {stored.filename} is recorded but its bytes are missing"
    ]


# --- signed links ----------------------------------------------------------------


def linked_service(
    world: World, clock: FakeClock, cache: InMemoryCache | None = None
) -> UploadService:
    return UploadService(
        telemetry=RecordingTelemetry(),
        files=world.repos.files,
        storage=ObjectFileStorage(lambda: world.store),
        rules=UploadRules(max_size=LIMIT, quota_bytes=10 * LIMIT),
        cache=cache,
        links=FileLinks(key=b"k" * 32, ttl_seconds=3600, step_seconds=600),
        clock=clock,
    )


def link_parts(path: str) -> tuple[int, int, int, str]:
    route, _, query = path.partition("?")
    fields = dict(part.split("=", 1) for part in query.split("&"))
    file_id = int(route.removeprefix("/files/").removesuffix("/content"))
    return file_id, int(fields["owner"]), int(fields["expires"]), fields["signature"]


async def read_linked(service: UploadService, path: str) -> bytes:
    opened = await service.open_linked(*link_parts(path))
    return b"".join([chunk async for chunk in opened.chunks])


async def test_a_signed_link_serves_the_file_until_it_expires(world: World) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 12, 5, 30, tzinfo=UTC))
    service = linked_service(world, clock)
    data = png(4, 4)
    stored = await service.upload_file(world.ann, Feed(data), original_name="a.png")
    link = service.link(stored.id, stored.user_id)
    assert link is not None
    # At least an hour, rounded up to ten minutes: the same link for ten minutes.
    assert link.expires_at == datetime(2026, 12, 1, 13, 10, tzinfo=UTC)
    clock.advance(minutes=4)
    assert service.link(stored.id, stored.user_id) == link
    assert await read_linked(service, link.path) == data
    clock.advance(minutes=60, seconds=29)  # 13:09:59
    assert await read_linked(service, link.path) == data
    clock.advance(seconds=1)
    with pytest.raises(PermissionDeniedError, match="expired"):
        await read_linked(service, link.path)


async def test_a_link_cannot_be_bent_to_another_file_owner_or_time(world: World) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    service = linked_service(world, clock)
    mine = await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    theirs = await service.upload_file(world.bob, Feed(png(5, 5)), original_name="b.png")
    link = service.link(mine.id, mine.user_id)
    assert link is not None
    file_id, owner, expires, signature = link_parts(link.path)
    for bent in [
        (theirs.id, owner, expires, signature),
        (file_id, world.bob.id, expires, signature),
        (file_id, owner, expires + 600, signature),
        (file_id, owner, expires, signature[:-1] + ("A" if signature[-1] != "A" else "B")),
        (file_id, owner, expires, ""),
        (file_id, owner, expires, "é" * 10),
    ]:
        with pytest.raises(PermissionDeniedError, match="not valid"):
            await service.open_linked(*bent)
    # Another server's key: not valid here either.
    elsewhere = FileLinks(key=b"x" * 32).link(mine.id, mine.user_id, clock.now())
    with pytest.raises(PermissionDeniedError, match="not valid"):
        await read_linked(service, elsewhere.path)


async def test_a_link_to_a_deleted_file_is_404_even_from_the_cache(world: World) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    service = linked_service(world, clock, cache=InMemoryCache(clock=clock))
    stored = await service.upload_file(world.ann, Feed(png()), original_name="a.png")
    link = service.link(stored.id, stored.user_id)
    assert link is not None
    assert await read_linked(service, link.path)  # and its record is now cached
    await service.delete_file(world.ann, stored.id)
    with pytest.raises(NotFoundError):
        await read_linked(service, link.path)


async def test_a_service_without_links_makes_none_and_serves_none(world: World) -> None:
    stored = await upload(world, png())
    assert world.service.link(stored.id, stored.user_id) is None
    with pytest.raises(NotFoundError):
        await world.service.open_linked(stored.id, stored.user_id, 2**40, "x")
