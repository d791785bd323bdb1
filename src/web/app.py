"""The Litestar application.

``create_app(container=None)``: with no container, the lifespan builds one
through the composition root from the settings (``load_settings()``); tests
inject a container to run the real HTTP layer over any adapters. Nothing
happens at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.plugins import PluginProtocol
from litestar.plugins.core import MsgspecDIPlugin

from web import composition, edge, shutdown
from web.admin import AdminController
from web.auth import AuthController
from web.chats import ChatsController, SearchController
from web.container import Container, ContainerSlot
from web.docs import docs_router, openapi_config
from web.files import FilesController
from web.health import HealthController
from web.json_body import JsonBodyRequest
from web.logs import configure_logging, flush_logs
from web.metrics import Metrics
from web.models import ModelsController
from web.page import page_router
from web.principal import signed_in_first
from web.problems import EXCEPTION_HANDLERS
from web.settings import Settings, load_settings
from web.usage import UsageController


def create_app(container: Container | None = None, *, settings: Settings | None = None) -> Litestar:
    if container is not None:
        settings = container.settings
    elif settings is None:
        settings = load_settings()
    configure_logging(settings)
    resolved_settings = settings
    # Made here, not in the lifespan: the middleware records into it.
    recorder = Metrics() if settings.metrics_enabled else None
    slot = ContainerSlot(container)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            async with serving():
                yield
        finally:
            # A worker may end without the interpreter's exit handlers: the
            # log files get what was logged before it goes.
            await asyncio.to_thread(flush_logs)

    @asynccontextmanager
    async def serving() -> AsyncIterator[None]:
        if container is not None:
            yield
            return
        async with (
            composition.open_container(resolved_settings, metrics=recorder) as built,
            # Answers still streaming at a stop signal end in time to be stored.
            shutdown.after_stop_signal(
                built.chats.abandon_answers,
                seconds=composition.answer_grace_seconds(resolved_settings),
            ),
        ):
            slot.fill(built)
            try:
                yield
            finally:
                slot.fill(None)

    docs = settings.docs_enabled
    app = _Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            AdminController,
            FilesController,
            ChatsController,
            SearchController,
            ModelsController,
            UsageController,
            page_router(),
            *([docs_router()] if docs else []),
        ],
        lifespan=[lifespan, *edge.lifespans(slot, recorder)],
        middleware=edge.route_middleware(settings, slot, recorder),
        cors_config=edge.cors_config(settings),
        request_max_body_size=edge.MAX_JSON_BODY,
        request_class=JsonBodyRequest,
        dependencies={"container": Provide(slot.get, sync_to_thread=False)},
        before_request=signed_in_first(slot.get),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(
            composition.app_version(), [offer.id for offer in settings.models]
        )
        if docs
        else None,
        # Logging is configured above; Litestar's default would replace it.
        logging_config=None,
        debug=False,
    )
    return edge.install(app, settings, slot, recorder)


class _Litestar(Litestar):
    """Litestar without the plugins it adds whenever pydantic or attrs is
    installed (google-genai brings pydantic): no model here is either, and
    loading them cost each worker 10 MB of its memory."""

    @staticmethod
    def _get_default_plugins(plugins: list[PluginProtocol]) -> list[PluginProtocol]:
        return [*plugins, MsgspecDIPlugin()]
