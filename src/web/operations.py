"""What the application needs to run in production, wired from the settings:
the middleware, CORS, the body size limit and the metrics.

Outermost first, a request passes through ``RequestContextMiddleware`` (which
also checks ``ALLOWED_HOSTS``) and ``GzipMiddleware``, both around everything
so that the router's own 404s get request ids and security headers too; then
Litestar's CORS, the router, and, per route, ``RateLimitMiddleware``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware

from web.metrics import database_sampler, metrics, metrics_endpoint, watch_model_calls
from web.middleware import GzipMiddleware, RequestContextMiddleware
from web.ratelimiting import RateLimitMiddleware, RateLimitPolicy
from web.settings import Settings

__all__ = [
    "MAX_JSON_BODY",
    "cors_config",
    "install",
    "lifespans",
    "route_middleware",
]

MAX_JSON_BODY = 1024 * 1024
"""Bytes a request body may have; the upload route sets its own limit."""

GZIP_MINIMUM_BYTES = 1024

EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-Process-Time",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def route_middleware(settings: Settings) -> list[DefineMiddleware]:
    recorder = metrics() if settings.metrics_enabled else None
    policy = RateLimitPolicy.from_settings(settings, recorder)
    return [DefineMiddleware(cast(Any, RateLimitMiddleware), policy=policy)]


def cors_config(settings: Settings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=EXPOSED_HEADERS,
        # Bearer tokens, no cookies: credentials mode is never needed.
        allow_credentials=False,
        max_age=600,
    )


def lifespans(settings: Settings) -> list[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    return [database_sampler] if settings.metrics_enabled else []


def install(app: Litestar, settings: Settings) -> Litestar:
    """Add ``/metrics`` and wrap the whole application in the outer middleware."""
    recorder = None
    if settings.metrics_enabled:
        recorder = metrics()
        watch_model_calls(recorder)
        app.register(metrics_endpoint)
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
