"""The admin guard over HTTP on in-memory adapters: 401 without a token, 403
for a non-admin, and a demotion that applies on the very next request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency, Provide
from litestar.testing import AsyncTestClient

from adapters.clock import SystemClock
from adapters.memory import FastPasswordHasher, InMemoryRepositories, RecordingMailer
from gemini_core.accounts import Client, Principal, Registration
from gemini_core.entities import OtpPurpose, UserChanges
from web.composition import memory_container
from web.container import Container
from web.principal import provide_admin, provide_principal
from web.problems import EXCEPTION_HANDLERS
from web.settings import load_settings

Setup = tuple[AsyncTestClient[Litestar], Container, str, InMemoryRepositories]


@get(
    "/admin-only",
    sync_to_thread=False,
    dependencies={"principal": Provide(provide_principal), "admin": Provide(provide_admin)},
)
def admin_only(admin: NamedDependency[Principal]) -> dict[str, int]:
    return {"admin_id": admin.user.id}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    settings = load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None
    )
    mailer = RecordingMailer()
    repos = InMemoryRepositories(clock=SystemClock())
    container = memory_container(
        settings, mailer=mailer, hasher=FastPasswordHasher(), repositories=repos
    )
    await container.accounts.send_code("ann@example.com", OtpPurpose.EMAIL_VERIFICATION)
    pair = await container.accounts.register(
        "ann@example.com",
        mailer.last_code("ann@example.com"),
        Registration(email="ann@example.com", username="ann", password="a fine passphrase"),
        Client(),
    )
    app = Litestar(
        [admin_only],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies={"container": Provide(lambda: container, sync_to_thread=False)},
    )
    async with AsyncTestClient(app) as client:
        yield client, container, pair.access_token, repos


async def test_the_guard_answers_401_then_403_then_follows_the_row(
    setup: Setup,
) -> None:
    client, container, token, repos = setup
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/admin-only")).status_code == 401
    assert (await client.get("/admin-only", headers=headers)).status_code == 403
    principal = await container.accounts.authenticate(token)
    await repos.users.update(principal.user.id, UserChanges(is_admin=True))
    promoted = await client.get("/admin-only", headers=headers)
    assert promoted.status_code == 200
    assert promoted.json() == {"admin_id": principal.user.id}
    await repos.users.update(principal.user.id, UserChanges(is_admin=False))
    assert (await client.get("/admin-only", headers=headers)).status_code == 403


def test_every_route_keeps_the_sign_in_check(tmp_path: Path) -> None:
    """The check runs as the app's ``before_request`` hook; a router, controller
    or handler that set a hook of its own would replace it, and its signed-in
    routes would no longer be checked."""
    from web.app import create_app

    settings = load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None
    )
    app = create_app(memory_container(settings))
    hook = app.before_request
    assert hook is not None
    handlers = [handler for route in app.routes for handler in getattr(route, "route_handlers", ())]
    assert len(handlers) > 30
    assert all(handler.resolve_before_request() is hook for handler in handlers)


async def test_a_stranger_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    from web.app import create_app

    settings = load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None
    )
    async with AsyncTestClient(create_app(memory_container(settings))) as client:
        response = await client.post(
            "/chats", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/health")).status_code == 200
