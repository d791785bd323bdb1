"""One file field of a ``multipart/form-data`` body, read as a stream.

Litestar's own form parsing reads the whole body before the handler runs;
uploads instead push the raw body through the ``multipart`` package's
incremental parser (the one Litestar itself uses) and hand the file field's
bytes on as they arrive. Whatever the body holds, no more than the file limit
plus ``FORM_OVERHEAD`` bytes of it are ever read, and a ``Content-Length``
over that is refused before reading anything.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

from litestar import Request
from litestar.exceptions import ClientException
from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    PushMultipartParser,
)

from gemini_core.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gemini_core.files import describe_size

# Room for boundaries, part headers and a few small fields besides the file.
FORM_OVERHEAD = 64 * 1024
MAX_PARTS = 16

_Event: TypeAlias = "MultipartSegment | bytes | None"


@dataclass(frozen=True, slots=True)
class FormFile:
    """The file field: its declared name and type (untrusted), and its bytes."""

    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


def _too_large(max_size: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The upload is larger than the limit of {describe_size(max_size)}."
    )


@asynccontextmanager
async def form_file(
    request: Request[Any, Any, Any], *, field: str, max_size: int
) -> AsyncIterator[FormFile]:
    """The form field ``field`` of the request, its bytes streamed.

    415 for a body that is not ``multipart/form-data``, 400 for a malformed
    one, 413 (``PayloadTooLargeError``) past ``max_size`` plus the form's
    overhead, 422 when the field is missing. Leaving the context stops reading.
    """
    media_type, options = request.content_type
    if media_type != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            f"Send the file as multipart/form-data, in a field named '{field}'."
        )
    boundary = options.get("boundary")
    if not boundary:
        raise ClientException("The multipart/form-data body has no boundary.")
    limit = max_size + FORM_OVERHEAD
    if (request.content_length or 0) > limit:
        raise _too_large(max_size)

    events = _events(request, boundary, limit, max_size)
    body: AsyncGenerator[bytes, None] | None = None
    try:
        async for event in events:
            if isinstance(event, MultipartSegment) and event.name == field:
                body = _segment_body(events)
                yield FormFile(
                    filename=event.filename, content_type=event.content_type, chunks=body
                )
                return
        raise InvalidInputError(f"Send the image in a form field named '{field}'.", field=field)
    finally:
        if body is not None:
            await body.aclose()
        await events.aclose()


async def _events(
    request: Request[Any, Any, Any], boundary: str, limit: int, max_size: int
) -> AsyncGenerator[_Event, None]:
    received = 0
    try:
        with PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
            # The stream ends with an empty chunk, which tells the parser to
            # check that the body was complete.
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(max_size)
                for event in parser.parse(chunk):
                    yield event
    except MultipartError as exc:
        raise ClientException(f"The multipart/form-data body is malformed: {exc}") from exc


async def _segment_body(events: AsyncIterator[_Event]) -> AsyncGenerator[bytes, None]:
    async for event in events:
        if event is None:  # the end of this part
            return
        if isinstance(event, bytes | bytearray):
            yield bytes(event)
