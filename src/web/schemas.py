"""Wire shapes shared by several controllers, and the one way entities become them."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


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
