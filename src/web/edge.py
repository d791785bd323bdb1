"""The application's edge, wired from the settings: the middleware, CORS, the
body size limit and the ``/metrics`` route.

Outermost first, a request passes through ``RequestContextMiddleware`` (which
also checks ``ALLOWED_HOSTS``) and ``GzipMiddleware``, both around everything
so that the router's own 404s get request ids and security headers too; then
Litestar's CORS, the router, and, per route, ``RateLimitMiddleware``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.routes import HTTPRoute

from web.container import ContainerSlot
from web.metrics import Metrics, database_sampler, metrics_endpoint
from web.middleware import GzipMiddleware, RequestContextMiddleware
from web.ratelimiting import RateLimitMiddleware, RateLimitPolicy
from web.settings import Settings

__all__ = [
    "LOCAL_ORIGINS",
    "MAX_JSON_BODY",
    "cors_config",
    "install",
    "lifespans",
    "route_middleware",
]

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1024 * 1024
"""Bytes a request body may have; the upload route sets its own limit."""

GZIP_MINIMUM_BYTES = 1024

LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"
"""The origins allowed in development when ``CORS_ORIGINS`` is unset."""

EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-Process-Time",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def route_middleware(
    settings: Settings, slot: ContainerSlot, recorder: Metrics | None
) -> list[DefineMiddleware]:
    policy = RateLimitPolicy.from_settings(settings, recorder)
    return [
        DefineMiddleware(
            cast(Any, RateLimitMiddleware),
            policy=policy,
            limiter=lambda: slot.get().rate_limiter,
        )
    ]


def cors_config(settings: Settings) -> CORSConfig | None:
    """``CORS_ORIGINS``; unset, none, except local origins in development, so that a
    frontend's development server (``http://localhost:3000``) works out of the box."""
    local_origins = None
    if not settings.cors_origins:
        if not settings.is_development:
            return None
        local_origins = LOCAL_ORIGINS
        log.info(
            "CORS_ORIGINS is unset: allowing local origins (http://localhost:<port>, "
            "http://127.0.0.1:<port>, http://[::1]:<port>) in development only"
        )
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_origin_regex=local_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=EXPOSED_HEADERS,
        # Bearer tokens, no cookies: credentials mode is never needed.
        allow_credentials=False,
        max_age=600,
    )


def lifespans(
    slot: ContainerSlot, recorder: Metrics | None
) -> list[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    if recorder is None:
        return []
    return [database_sampler(recorder, lambda: slot.get().health.check_database())]


def install(
    app: Litestar, settings: Settings, slot: ContainerSlot, recorder: Metrics | None
) -> Litestar:
    """Add ``/metrics`` and wrap the whole application in the outer middleware."""
    if recorder is not None:
        app.register(metrics_endpoint(recorder, lambda: slot.get().health.check_database()))
    _allow_every_method(app)
    inner: Any = app.asgi_handler
    app.asgi_handler = cast(
        Any,
        RequestContextMiddleware(
            GzipMiddleware(inner, minimum_size=GZIP_MINIMUM_BYTES),
            trusted_proxies=settings.trusted_proxies,
            allowed_hosts=settings.allowed_hosts,
            production=settings.is_production,
            metrics=recorder,
        ),
    )
    return app


def _allow_every_method(app: Litestar) -> None:
    """Make ``OPTIONS`` name every method of its path in ``Allow``.

    Litestar 2 rebuilds a path's route as each handler of it is registered, but keeps
    the ``OPTIONS`` handler of the first build, whose ``Allow`` lists only the methods
    known then (litestar-org/litestar#4169, fixed in Litestar 3). Each such handler is
    given the body of a fresh one, bound to the finished route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.http_methods == {"OPTIONS"} and handler.fn.__name__ == "options_handler":
                handler._fn = route.create_options_handler(route.path).fn
