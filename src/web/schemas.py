"""Wire shapes shared by several controllers, and the one way entities become them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar.params import QueryParameter

from gemini_core.pagination import MAX_PAGE_SIZE
from gemini_core.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from gemini_core.passwords import MIN_LENGTH as MIN_PASSWORD_LENGTH
from gemini_core.validation import (
    MAX_EMAIL_LENGTH,
    MAX_FULL_NAME_LENGTH,
    NAME_PATTERN,
    USERNAME_PATTERN,
)

S = TypeVar("S", bound=msgspec.Struct)


def stated(**rules: Any) -> msgspec.Meta:
    """A rule the core enforces (answering 422 in its own words), stated in the OpenAPI
    document but not checked again here, so the two cannot differ. The keys are
    Litestar's `Schema` fields: `min_length`, `max_length`, `pattern`, `format`, ..."""
    return msgspec.Meta(extra_json_schema={"extra": rules})


# The fields people type, with the core's rules stated. The hard limits msgspec checks
# here are looser: they only keep an absurd value from reaching the core.
Email = Annotated[
    str, msgspec.Meta(max_length=320), stated(format="email", max_length=MAX_EMAIL_LENGTH)
]
Username = Annotated[
    str, msgspec.Meta(max_length=64), stated(pattern=USERNAME_PATTERN, max_length=32)
]
NewPassword = Annotated[
    str,
    msgspec.Meta(max_length=1024),
    stated(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH),
]
FullName = Annotated[
    str,
    msgspec.Meta(max_length=200),
    stated(max_length=MAX_FULL_NAME_LENGTH, pattern=NAME_PATTERN),
]
# A page size in the query; the core answers 422 outside 1..MAX_PAGE_SIZE.
PageSize = Annotated[int, QueryParameter(schema_extra={"minimum": 1, "maximum": MAX_PAGE_SIZE})]


def to_wire(struct: type[S], value: object, **computed: object) -> S:
    """``struct`` from ``value``'s attributes of the same names, entities nested
    in it included: enums become their values, tuples become lists, attributes
    ``struct`` lacks are left out. ``computed`` gives the fields ``value`` has
    no attribute for."""
    if computed:
        fields = struct.__struct_fields__
        value = {name: getattr(value, name) for name in fields if name not in computed} | computed
    return msgspec.convert(value, struct, from_attributes=True)


class UserOut(msgspec.Struct):
    """The contract's User object; the password hash never leaves the server."""

    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    is_verified: bool
    is_admin: bool
    created_at: datetime
    last_login_at: datetime | None
    daily_token_quota: int | None
    """This user's own daily token limit; null: the deployment's default."""
    daily_message_quota: int | None
    """This user's own daily answer limit; null: the deployment's default."""
