"""Who is calling: the principal behind the bearer token on the request, checked
on every call, the admin among principals, and the client's user agent and address."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from gemini_core.accounts import Client, Principal
from gemini_core.errors import AuthenticationError, PermissionDeniedError
from web.container import Container
from web.logs import bind_user

MAX_USER_AGENT = 512


async def provide_principal(
    request: Request[Any, Any, Any], container: NamedDependency[Container]
) -> Principal:
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
