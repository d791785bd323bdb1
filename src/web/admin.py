"""``/admin``: statistics and user management, for admins only."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from litestar import Controller, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from gemini_core.accounts import Principal
from gemini_core.admin import MAX_QUOTA, AccountEdit
from gemini_core.errors import ConflictError, PermissionDeniedError
from web.container import Container
from web.contract import documents
from web.principal import provide_admin, provide_principal
from web.schemas import FullName, Username, UserOut, stated, to_wire
from web.usage import FirstDay, LastDay


class StatsOut(msgspec.Struct):
    total_users: int
    total_chats: int
    total_messages: int
    active_users_today: int
    new_users_this_week: int


class UsersPageOut(msgspec.Struct):
    items: list[UserOut]
    total: int
    page: int
    size: int
    pages: int


# A quota an admin sets; the core refuses (422) beyond MAX_QUOTA.
Quota = Annotated[int, stated(minimum=0, maximum=MAX_QUOTA)]


class UserEditIn(msgspec.Struct):
    full_name: FullName | msgspec.UnsetType | None = msgspec.UNSET
    username: Username | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
    is_verified: bool | msgspec.UnsetType = msgspec.UNSET
    is_admin: bool | msgspec.UnsetType = msgspec.UNSET
    daily_token_quota: Quota | msgspec.UnsetType | None = msgspec.UNSET
    """The user's own daily token limit; null: back to the deployment's default."""
    daily_message_quota: Quota | msgspec.UnsetType | None = msgspec.UNSET
    """The user's own daily answer limit; null: back to the deployment's default."""


class UserUsageOut(msgspec.Struct):
    user: UserOut
    messages: int
    prompt_tokens: int
    completion_tokens: int


class UsagePageOut(msgspec.Struct):
    items: list[UserUsageOut]
    total: int
    page: int
    size: int
    pages: int


T = TypeVar("T")


def _given(value: T | msgspec.UnsetType) -> T | None:
    return None if isinstance(value, msgspec.UnsetType) else value


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]  # noqa: RUF012  (Litestar reads class attributes)
    opt = documents(raises=[PermissionDeniedError])
    dependencies = {  # noqa: RUF012
        "principal": Provide(provide_principal),
        "admin": Provide(provide_admin),
    }

    @get("/stats", operation_id="adminStats")
    async def stats(
        self, admin: NamedDependency[Principal], container: NamedDependency[Container]
    ) -> StatsOut:
        return StatsOut(**await container.admin.statistics())

    @get("/users", operation_id="adminListUsers")
    async def users(
        self,
        admin: NamedDependency[Principal],
        container: NamedDependency[Container],
        page: Annotated[int, Parameter(ge=1)] = 1,
        size: Annotated[int, Parameter(ge=1, le=100)] = 20,
        q: Annotated[str | None, Parameter(max_length=320)] = None,
    ) -> UsersPageOut:
        """Accounts not deleted, by id; ``q`` matches part of an email or username."""
        found = await container.admin.list_users(page=page, size=size, query=q)
        return to_wire(UsersPageOut, found)

    @get("/usage", operation_id="adminUsage")
    async def usage(
        self,
        admin: NamedDependency[Principal],
        container: NamedDependency[Container],
        first: FirstDay = None,
        last: LastDay = None,
        page: Annotated[int, QueryParameter(ge=1)] = 1,
        size: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> UsagePageOut:
        """Every user's answers and tokens from `from` to `to` (UTC days, at most
        366; default the last 30), biggest users (by tokens) first."""
        found = await container.usage.by_user(first=first, last=last, page=page, size=size)
        return to_wire(UsagePageOut, found)

    @put(
        "/users/{user_id:int}",
        operation_id="adminUpdateUser",
        opt=documents(raises=[ConflictError]),
    )
    async def update_user(
        self,
        user_id: FromPath[int],
        data: JSONBody[UserEditIn],
        admin: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> UserOut:
        """Deactivating ends the user's sessions; you cannot demote or deactivate yourself."""
        full_name = _given(data.full_name)
        edit = AccountEdit(
            full_name="" if data.full_name is None else full_name,
            username=_given(data.username),
            is_active=_given(data.is_active),
            is_verified=_given(data.is_verified),
            is_admin=_given(data.is_admin),
            daily_token_quota=_given(data.daily_token_quota),
            default_daily_token_quota=data.daily_token_quota is None,
            daily_message_quota=_given(data.daily_message_quota),
            default_daily_message_quota=data.daily_message_quota is None,
        )
        return to_wire(UserOut, await container.admin.edit_user(admin, user_id, edit))

    @delete(
        "/users/{user_id:int}",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="adminDeleteUser",
        opt=documents(raises=[ConflictError]),
    )
    async def delete_user(
        self,
        user_id: FromPath[int],
        admin: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> None:
        """Soft delete: the row stays, sign-in is refused, its tokens stop working."""
        await container.admin.delete_user(admin, user_id)
