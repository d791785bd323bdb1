"""Uploaded images: accepted by their bytes, stored under new random names,
served only to their owner (or an admin), counted against a quota.

An upload is read as a stream and judged on its first bytes: the kind
(JPEG, PNG, GIF or WebP) and the pixel size come from the header, so a fake
or a decompression bomb is refused before the rest is read. The size limit
and the room left in the owner's quota are enforced while the bytes flow to
storage, so an oversized upload stops at the first byte over.

The store stays consistent with the records: the bytes are written first and
the row after (in one step that also checks the quota); when the row cannot
be written the bytes are removed again. Deleting removes the row, then the
bytes; bytes that cannot be removed are logged, never shown to the caller.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from gemini_core.entities import FileUpload, NewFileUpload, User
from gemini_core.errors import (
    GeminiError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gemini_core.images import MAX_PIXELS, MAX_SIDE, SNIFF_BYTES, ImageInfo, sniff_image
from gemini_core.links import FileLinks, SignedLink
from gemini_core.pagination import check_page_size, decode_id_cursor, encode_id_cursor, fetch_page
from gemini_core.ports import Cache, Clock, FileUploadRepository
from gemini_core.storage import FileStorage
from gemini_core.telemetry import FileUploaded, Telemetry

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_NAME_LENGTH = 200
FALLBACK_NAME = "upload"

NOT_AN_IMAGE = (
    "The file is not a JPEG, PNG, GIF or WebP image (judged by its bytes, "
    "not by its name or declared type)."
)
NO_SUCH_FILE = "No such file."
# How long a stored file's record is kept in the cache for serving it again.
RECORD_TTL_SECONDS = 300.0

# What the service generates: 32 hex digits and one of the known extensions.
_STORED_NAME = re.compile(r"[0-9a-f]{32}\.(?:jpg|png|gif|webp)")
_DIRECTORY_SEPARATORS = re.compile(r"[/\\]")
_UNSAFE_IN_NAME = re.compile(r'["`]')
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class UploadRules:
    max_size: int = 10 * 1024 * 1024
    """Bytes one file may have."""
    quota_bytes: int = 1024 * 1024 * 1024
    """Bytes of files one user may keep."""


@dataclass(frozen=True, slots=True)
class FilePage:
    items: list[FileUpload]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """A file's record and its bytes, ready to stream."""

    upload: FileUpload
    chunks: AsyncIterator[bytes]


def random_stored_name() -> str:
    """128 random bits: unguessable, and never equal to another file's name."""
    return secrets.token_hex(16)


def clean_filename(name: str | None) -> str:
    """A user's file name made safe to keep and to show in a header.

    Keeps the last path component (``/`` and ``\\`` both separate), drops
    control and format characters (including bidirectional overrides that
    disguise an extension), quotes and backticks, collapses white space, trims
    dots and spaces at both ends, and bounds the length while keeping the
    extension. What is left empty becomes ``"upload"``.
    """
    if not name:
        return FALLBACK_NAME
    name = unicodedata.normalize("NFC", name)
    name = _DIRECTORY_SEPARATORS.split(name)[-1]
    name = _SPACES.sub(" ", name)  # tabs and line breaks too, before controls go
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE_IN_NAME.sub("", name)
    name = _SPACES.sub(" ", name).strip(" .")
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_NAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
        else:
            name = name[:MAX_NAME_LENGTH].rstrip(" .")
    return name or FALLBACK_NAME


def describe_size(size: int) -> str:
    """A byte count as people read it: ``10 MiB``, ``1.5 MiB``, ``64 KiB``."""
    mib, kib = 1024 * 1024, 1024
    if size >= mib:
        return f"{size // mib} MiB" if size % mib == 0 else f"{size / mib:.1f} MiB"
    if size >= kib and size % kib == 0:
        return f"{size // kib} KiB"
    return f"{size} bytes"


class _Reader:
    """Pulls an upload's chunks, counting bytes and stopping at the limits."""

    def __init__(self, chunks: AsyncIterable[bytes], *, rules: UploadRules, room: int) -> None:
        self._chunks = aiter(chunks)
        self._rules = rules
        self._room = room
        self.size = 0

    async def read(self) -> bytes | None:
        """The next non-empty chunk, or ``None`` at the end."""
        async for chunk in self._chunks:
            if chunk:
                self._count(len(chunk))
                return chunk
        return None

    def _count(self, length: int) -> None:
        self.size += length
        if self.size > self._rules.max_size:
            raise PayloadTooLargeError(
                f"The file is larger than the limit of {describe_size(self._rules.max_size)}."
            )
        if self.size > self._room:
            raise PayloadTooLargeError(_over_quota(self._rules, self._room))

    async def rest(self, head: bytes) -> AsyncIterator[bytes]:
        """``head``, then every chunk still to come."""
        yield head
        while (chunk := await self.read()) is not None:
            yield chunk


def _over_quota(rules: UploadRules, room: int) -> str:
    left = f"{describe_size(room)} of it left" if room > 0 else "none of it left"
    return (
        f"This file would take you over your storage quota of "
        f"{describe_size(rules.quota_bytes)} ({left}); delete some files first."
    )


class UploadService:
    def __init__(
        self,
        *,
        files: FileUploadRepository,
        storage: FileStorage,
        rules: UploadRules,
        telemetry: Telemetry,
        cache: Cache | None = None,
        links: FileLinks | None = None,
        clock: Clock | None = None,
    ) -> None:
        """With ``links`` and a ``clock``, files also get signed links (``link``)."""
        self._files = files
        self._storage = storage
        self._rules = rules
        self._telemetry = telemetry
        self._cache = cache
        self._links = links if clock is not None else None
        self._clock = clock

    async def upload_file(
        self, owner: User, chunks: AsyncIterable[bytes], *, original_name: str | None
    ) -> FileUpload:
        """Store an image the owner sends as ``chunks`` and record it.

        ``UnsupportedMediaTypeError`` for anything but a JPEG, PNG, GIF or WebP;
        ``InvalidInputError(field="file")`` for an empty file or an absurd pixel
        size; ``PayloadTooLargeError`` over the size limit or the quota.
        """
        room = self._rules.quota_bytes - await self._files.total_size(owner.id)
        if room <= 0:
            raise PayloadTooLargeError(_over_quota(self._rules, room))
        reader = _Reader(chunks, rules=self._rules, room=room)
        head, info = await self._read_header(reader)
        key = random_stored_name() + info.extension
        await self._storage.put(key, reader.rest(head), content_type=info.content_type)
        try:
            stored = await self._files.add_within_quota(
                NewFileUpload(
                    user_id=owner.id,
                    filename=key,
                    original_filename=clean_filename(original_name),
                    content_type=info.content_type,
                    file_size=reader.size,
                ),
                quota=self._rules.quota_bytes,
            )
            if stored is None:  # uploads running alongside took the room meanwhile
                used = await self._files.total_size(owner.id)
                raise PayloadTooLargeError(_over_quota(self._rules, self._rules.quota_bytes - used))
        except BaseException:
            await self._discard(key)
            raise
        self._telemetry.file_uploaded(
            FileUploaded(user_id=owner.id, content_type=stored.content_type, size=stored.file_size)
        )
        return stored

    async def _read_header(self, reader: _Reader) -> tuple[bytes, ImageInfo]:
        """Read until the header says the kind and pixel size; refuse early."""
        # Most headers fit the first chunk; a JPEG's may follow its metadata,
        # in the worst case up to the size limit, which bounds this buffer.
        head = bytearray()
        while (chunk := await reader.read()) is not None:
            head += chunk
            if len(head) < SNIFF_BYTES:
                continue
            found = sniff_image(head)
            if found is None:
                raise UnsupportedMediaTypeError(NOT_AN_IMAGE)
            if found.size_known:
                break
        if not head:
            raise InvalidInputError("The file is empty.", field="file")
        info = sniff_image(head)
        if info is None or not info.width or not info.height:
            raise UnsupportedMediaTypeError(NOT_AN_IMAGE)
        if info.is_bomb:
            raise InvalidInputError(
                f"The image declares {info.width} x {info.height} pixels; at most "
                f"{MAX_SIDE} on a side and {MAX_PIXELS // 1_000_000} megapixels are accepted.",
                field="file",
            )
        return bytes(head), info

    async def _discard(self, key: str) -> None:
        try:
            await self._storage.delete(key)
        except GeminiError:
            log.exception("could not remove the bytes of an unrecorded upload %s", key)

    async def list_files(self, owner: User, *, limit: int, cursor: str | None) -> FilePage:
        """The owner's files, newest first, a page at a time."""
        check_page_size(limit)
        before = None if cursor is None else decode_id_cursor(cursor)
        items, next_cursor = await fetch_page(
            lambda n: self._files.list(owner.id, limit=n, before=before),
            limit,
            lambda last: encode_id_cursor(last.id),
        )
        return FilePage(items=items, next_cursor=next_cursor)

    async def open_file(self, viewer: User, filename: str) -> OpenedFile:
        """A file by its stored name, for its owner or an admin; ``NotFoundError``
        for anyone else, so names do not leak."""
        if not _STORED_NAME.fullmatch(filename):
            raise NotFoundError(NO_SUCH_FILE)
        upload, from_cache = await self._record(
            f"upload:{filename}", lambda: self._files.get_by_filename(filename)
        )
        if upload is None or (upload.user_id != viewer.id and not viewer.is_admin):
            raise NotFoundError(NO_SUCH_FILE)
        return await self._open(upload, from_cache)

    def link(self, file_id: int, owner_id: int) -> SignedLink | None:
        """A link that serves the file without a token until it expires (None:
        this service makes no links)."""
        if self._links is None or self._clock is None:
            return None
        return self._links.link(file_id, owner_id, self._clock.now())

    async def open_linked(
        self, file_id: int, owner_id: int, expires: int, signature: str
    ) -> OpenedFile:
        """The file a signed link names. ``PermissionDeniedError`` for a link
        this server did not sign, or one that has expired (both before anything
        is looked up); ``NotFoundError`` once the file is deleted."""
        if self._links is None or self._clock is None:
            raise NotFoundError(NO_SUCH_FILE)
        self._links.check(file_id, owner_id, expires, signature, self._clock.now())
        upload, from_cache = await self._record(
            f"upload-id:{file_id}", lambda: self._files.get(owner_id, file_id)
        )
        if upload is None or upload.user_id != owner_id:  # a cached record is anyone's
            raise NotFoundError(NO_SUCH_FILE)
        return await self._open(upload, from_cache)

    async def _open(self, upload: FileUpload, from_cache: bool) -> OpenedFile:
        try:
            chunks = await self._storage.open(upload.filename)
        except NotFoundError:
            if from_cache:
                # Deleted since it was cached (say, by another process whose
                # cache this is not): a stale entry, not lost bytes.
                await self._forget_record(upload)
                if await self._files.get_by_filename(upload.filename) is None:
                    raise
            log.error("file %s is recorded but its bytes are missing", upload.filename)
            raise
        return OpenedFile(upload=upload, chunks=chunks)

    async def _record(
        self, key: str, load: Callable[[], Awaitable[FileUpload | None]]
    ) -> tuple[FileUpload | None, bool]:
        """The record cached under ``key`` (else ``load``ed, and cached), and
        whether it came from the cache.

        A chat shows the same images again and again, and a record never
        changes once written (only its deletion matters, and then the bytes are
        gone too), so it is cached briefly.
        """
        cached = await self._cache_get(key)
        if cached is not None:
            return _decode_record(cached), True
        upload = await load()
        if upload is not None and self._cache is not None:
            try:
                await self._cache.set(key, _encode_record(upload), ttl_seconds=RECORD_TTL_SECONDS)
            except GeminiError:
                log.warning("could not cache the record of %s", upload.filename)
        return upload, False

    async def _cache_get(self, key: str) -> bytes | None:
        if self._cache is None:
            return None
        try:
            return await self._cache.get(key)
        except GeminiError:  # a cache that is down is only slower
            return None

    async def _forget_record(self, upload: FileUpload) -> None:
        if self._cache is None:
            return
        try:
            await self._cache.delete(f"upload:{upload.filename}")
            await self._cache.delete(f"upload-id:{upload.id}")
        except GeminiError:
            log.warning("could not drop the cached record of %s", upload.filename)

    async def delete_file(self, owner: User, file_id: int) -> None:
        """Forget the owner's file and remove its bytes."""
        upload = await self._files.delete(owner.id, file_id)
        if upload is None:
            raise NotFoundError(NO_SUCH_FILE)
        await self._forget_record(upload)
        try:
            await self._storage.delete(upload.filename)
        except GeminiError:
            log.exception("file %s was deleted but its bytes could not be removed", upload.filename)


def _encode_record(upload: FileUpload) -> bytes:
    fields = dataclasses.asdict(upload)
    fields["created_at"] = upload.created_at.isoformat()
    return json.dumps(fields).encode()


def _decode_record(raw: bytes) -> FileUpload:
    fields = json.loads(raw)
    fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return FileUpload(**fields)
