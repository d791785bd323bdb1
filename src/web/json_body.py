"""How every route reads a JSON body: only one sent as JSON, never a crash.

Litestar decodes a body before it checks it against the route's type, so a
body nested a thousand deep exhausts msgspec's recursion limit and surfaces as
a ``RecursionError``: a 500 and a traceback, for anyone who can send 2 KB. It
is a body that cannot be decoded, so it answers 400 like any other. A body
labelled as something other than JSON is refused (415) rather than guessed at.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

NOT_JSON = "Send the request body as JSON, with Content-Type: application/json."


def is_json(media_type: str) -> bool:
    """``application/json`` and the structured ``+json`` types (RFC 6839)."""
    kind = media_type.strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


class JsonBodyRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        media_type, _ = self.content_type
        if not is_json(media_type) and await self.body():
            raise ClientException(detail=NOT_JSON, status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE)
        try:
            value = await super().json()
        except RecursionError as exc:
            raise SerializationException("it is nested too deeply") from exc
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        if data is not None:
            try:
                msgspec.convert(_integral_floats_as_ints(value), data.annotation, strict=True)
            except msgspec.ValidationError as exc:
                raise ValidationException(extra=[{"key": "data", "message": str(exc)}]) from exc
        return value


def _integral_floats_as_ints(value: Any) -> Any:
    """``value`` with each float that has no fractional part as an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    return value
