"""Who is calling: the principal behind the bearer token on the request, checked
on every call, the admin among principals, and the client's user agent and address."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.types import BeforeRequestHookHandler

from gemini_core.accounts import Client, Principal
from gemini_core.errors import AuthenticationError, PermissionDeniedError
from web.container import Container
from web.logs import bind_user

MAX_USER_AGENT = 512
_PRINCIPAL = "principal"  # where the guard leaves the caller, in the request's state


async def provide_principal(
    request: Request[Any, Any, Any], container: NamedDependency[Container]
) -> Principal:
    """The caller, as ``signed_in_first`` found them (or found now, without it)."""
    known: Principal | None = request.state.get(_PRINCIPAL)
    return known if known is not None else await _authenticate(request, container)


def signed_in_first(container: Callable[[], Container]) -> BeforeRequestHookHandler:
    """A hook before every route's handler: one whose handler takes the
    ``principal`` (or the ``admin``) is refused (401, or 403 for a non-admin)
    before its body or parameters are read, so a stranger learns nothing from
    how they are judged.

    A ``before_request`` hook rather than a guard: Litestar copies the route
    handler for every guard call, a cost every request would pay (public ones
    too: 7 % of ``/health``)."""
    needs: dict[int, tuple[bool, bool]] = {}

    async def check(request: Request[Any, Any, Any]) -> None:
        handler = request.scope["route_handler"]
        wanted = needs.get(id(handler))
        if wanted is None:
            wanted = needs[id(handler)] = (
                signed_in(handler),
                "admin" in handler.parsed_fn_signature.parameters,
            )
        principal_wanted, admin_wanted = wanted
        if not principal_wanted:
            return
        principal = await _authenticate(request, container())
        request.state[_PRINCIPAL] = principal
        if admin_wanted:
            await provide_admin(principal)

    return check


def signed_in(handler: BaseRouteHandler) -> bool:
    """Whether the route is for signed-in callers: its handler takes the
    ``principal`` or the ``admin``. The guard and the OpenAPI document both ask."""
    return bool({"principal", "admin"} & handler.parsed_fn_signature.parameters.keys())


async def _authenticate(request: Request[Any, Any, Any], container: Container) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Sign in first: send 'Authorization: Bearer <access token>'.")
    principal = await container.accounts.authenticate(token.strip())
    bind_user(principal.user.id)  # named on the request's later log records
    return principal


async def provide_admin(principal: NamedDependency[Principal]) -> Principal:
    """An admin, judged on the user's row as it is now, so a demotion applies at once."""
    if not principal.user.is_admin:
        raise PermissionDeniedError("This needs an administrator.")
    return principal


def client_of(request: Request[Any, Any, Any]) -> Client:
    user_agent = request.headers.get("user-agent")
    return Client(
        user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
        ip=request.client.host if request.client else None,
    )
