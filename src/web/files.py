"""``/upload``, ``/uploads/{filename}`` and ``/files``: images sent, served, listed, deleted.

Files are streamed both ways: an upload is checked as it arrives (see
``web.multipart``) and a download is passed through from storage chunk by
chunk, local folder or S3 alike. Downloads always go through this service
rather than redirecting to a presigned S3 URL, so the owner check runs on
every read and the response carries our headers (``nosniff``, the
``Content-Disposition`` with the original name, ``Cache-Control: private``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gemini_core.accounts import Principal
from gemini_core.entities import FileUpload
from gemini_core.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
)
from gemini_core.files import DEFAULT_PAGE_SIZE, OpenedFile, UploadService
from gemini_core.links import MAX_SIGNATURE_LENGTH, SignedLink
from web.container import Container
from web.contract import documents
from web.multipart import form_file
from web.principal import provide_principal
from web.schemas import PageSize, to_wire


class FileOut(msgspec.Struct):
    id: int
    filename: str
    original_filename: str
    url: str
    """Where the bytes are served to a request with the owner's Bearer token."""
    file_size: int
    content_type: str
    created_at: datetime
    signed_url: str
    """Where the bytes are served without a token until `signed_url_expires_at`:
    for an `<img src>`, which sends no `Authorization` header."""
    signed_url_expires_at: datetime

    @classmethod
    def of(cls, upload: FileUpload, files: UploadService) -> FileOut:
        """``url`` is where ``download`` serves the bytes, ``signed_url`` where
        ``download_linked`` does."""
        link = signed_link(files, upload.id, upload.user_id)
        return to_wire(
            cls,
            upload,
            url=f"/uploads/{upload.filename}",
            signed_url=link.path,
            signed_url_expires_at=link.expires_at,
        )


def signed_link(files: UploadService, file_id: int, owner_id: int) -> SignedLink:
    """A link ``download_linked`` serves (every service the app builds makes them)."""
    link = files.link(file_id, owner_id)
    if link is None:
        raise RuntimeError("the upload service was built without signed links")
    return link


class FilesPageOut(msgspec.Struct):
    items: list[FileOut]
    next_cursor: str | None


def inline_disposition(name: str) -> str:
    """``inline`` with the (already sanitised) name; a name beyond ASCII also
    goes as RFC 6266 ``filename*``, with an ASCII stand-in for old clients."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "_" for ch in name)
    if fallback == name:
        return f'inline; filename="{name}"'
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def streamed(opened: OpenedFile, *, cache_control: str) -> Stream:
    """The file's bytes as they come from storage, with what a browser needs to
    show them safely (never sniffed, shown inline under the uploader's name)."""
    upload = opened.upload
    return Stream(
        opened.chunks,
        media_type=upload.content_type,
        headers={
            "Content-Length": str(upload.file_size),
            "Content-Disposition": inline_disposition(upload.download_name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": cache_control,
        },
    )


_BIGINT = 2**63 - 1  # ids and times in a link fit PostgreSQL's bigint

# What an upload may be, judged by its bytes: the types a download is served as.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class FilesController(Controller):
    path = "/"
    tags = ["files"]  # noqa: RUF012  (Litestar reads class attributes)
    dependencies = {"principal": Provide(provide_principal)}  # noqa: RUF012

    # Litestar's body limit is off here: form_file enforces the upload limit
    # itself, as the bytes arrive.
    @post(
        "/upload",
        status_code=HTTP_201_CREATED,
        operation_id="uploadFile",
        request_max_body_size=None,
        opt=documents(
            raises=[PayloadTooLargeError, UnsupportedMediaTypeError, InvalidInputError],
            body={
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    },
                    "encoding": {"file": {"contentType": ", ".join(IMAGE_TYPES)}},
                }
            },
        ),
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> FileOut:
        """Upload a JPEG, PNG, GIF or WebP image as the multipart field `file`."""
        max_size = container.settings.max_upload_size
        async with form_file(request, field="file", max_size=max_size) as part:
            upload = await container.files.upload_file(
                principal.user, part.chunks, original_name=part.filename
            )
        return FileOut.of(upload, container.files)

    @get("/uploads/{filename:str}", operation_id="getUpload", opt=documents(binary=IMAGE_TYPES))
    async def download(
        self,
        filename: FromPath[str],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> Stream:
        """The image's bytes, for its owner or an admin."""
        opened = await container.files.open_file(principal.user, filename)
        return streamed(opened, cache_control="private")

    @get(
        "/files/{file_id:int}/content",
        operation_id="getFileByLink",
        opt=documents(binary=IMAGE_TYPES, raises=[PermissionDeniedError, NotFoundError]),
    )
    async def download_linked(
        self,
        file_id: FromPath[int],
        owner: Annotated[int, QueryParameter(ge=1, le=_BIGINT)],
        expires: Annotated[int, QueryParameter(ge=0, le=_BIGINT)],
        signature: Annotated[str, QueryParameter(max_length=MAX_SIGNATURE_LENGTH)],
        container: NamedDependency[Container],
    ) -> Stream:
        """The image's bytes, by a file's `signed_url`, with no token: 403 for a
        link this server did not sign or one that has expired, 404 once the file
        is deleted."""
        opened = await container.files.open_linked(file_id, owner, expires, signature)
        # The browser may keep it as long as the link lives (a minute at least).
        fresh = max(60, expires - int(time.time()))
        return streamed(opened, cache_control=f"private, max-age={fresh}")

    @get("/files", operation_id="listFiles")
    async def list_files(
        self,
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        limit: PageSize = DEFAULT_PAGE_SIZE,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> FilesPageOut:
        """The caller's files, newest first; pass `next_cursor` back as `cursor`."""
        page = await container.files.list_files(principal.user, limit=limit, cursor=cursor)
        return FilesPageOut(
            items=[FileOut.of(upload, container.files) for upload in page.items],
            next_cursor=page.next_cursor,
        )

    @delete("/files/{file_id:int}", status_code=HTTP_204_NO_CONTENT, operation_id="deleteFile")
    async def delete_file(
        self,
        file_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> None:
        """Delete one of the caller's files and its stored bytes."""
        await container.files.delete_file(principal.user, file_id)
