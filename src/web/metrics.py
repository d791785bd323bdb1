"""Prometheus metrics, served at ``GET /metrics``.

The application makes one ``Metrics`` (its registry and the HTTP layer's own
metrics: requests, rate-limit decisions, the database pool) and hands it to
whatever records into it; the core's events and cache lookups are counted by
``adapters.prometheus`` in the same registry. With several workers,
``gemini-backend serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory before they start: each worker then keeps its values in files
there, and whichever worker answers ``/metrics`` reads them all
(``MultiProcessCollector``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from gemini_core.ports import DatabaseStatus

__all__ = ["Metrics", "database_sampler", "metrics_endpoint", "multiprocess_directory"]

DatabaseCheck = Callable[[], Awaitable[DatabaseStatus]]

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
DATABASE_SAMPLE_SECONDS = 15.0

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    return MULTIPROC_DIR in os.environ


class Metrics:
    """The registry the service exposes, and the HTTP layer's metrics in it."""

    def __init__(self) -> None:
        # prometheus_client picks its value store when first imported; choose
        # again now, in case it was imported before PROMETHEUS_MULTIPROC_DIR was set.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gemini_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gemini_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.database_up = Gauge(
            "gemini_database_up",
            "1 when the database answered the last check, else 0.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.database_pool = Gauge(
            "gemini_database_pool_connections",
            "Connection pool figures (pool_size, pool_available, requests_waiting, ...), "
            "summed over the worker processes.",
            ["figure"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.rate_limit = Counter(
            "gemini_rate_limit_decisions",
            "Rate-limit decisions by limit (default, auth_client, auth_email) and decision "
            "(allowed, refused, failed_open).",
            ["limit", "decision"],
            registry=r,
        )
        # Children by label values, found without the library's checks and lock.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._rate_limit_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            label = method if method in _METHODS else "OTHER"
            labels = (label, route, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            if len(self._request_children) < 10_000:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_rate_limit(self, limit: str, decision: str) -> None:
        child = self._rate_limit_children.get((limit, decision))
        if child is None:
            child = self._rate_limit_children[limit, decision] = self.rate_limit.labels(
                limit, decision
            )
        child.inc()

    def observe_database(self, status: DatabaseStatus) -> None:
        self.database_up.set(1 if status.healthy else 0)
        for figure, value in status.pool.items():
            self.database_pool.labels(figure).set(value)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format; with several workers, all of theirs."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def forget_this_process(self) -> None:
        """Drop this worker's live gauges when it stops, so sums count live workers only."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def multiprocess_directory(workers: int) -> Iterator[Path | None]:
    """Where the workers of ``gemini-backend serve`` keep their metrics, emptied
    before they start: ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it,
    else, with more than one worker, a temporary directory removed at the end.
    One worker needs none."""
    configured = os.environ.get(MULTIPROC_DIR)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # left by an earlier run
            stale.unlink()
        yield directory
        return
    if workers <= 1:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="gemini-metrics-"))
    os.environ[MULTIPROC_DIR] = str(directory)
    try:
        yield directory
    finally:
        del os.environ[MULTIPROC_DIR]
        shutil.rmtree(directory, ignore_errors=True)


def database_sampler(
    recorder: Metrics, check: DatabaseCheck
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan: sample the database pool into the gauges every few seconds,
    so each worker's figures stay current whichever worker is scraped."""

    @contextlib.asynccontextmanager
    async def sampling(_: Litestar) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                with contextlib.suppress(Exception):
                    recorder.observe_database(await check())
                await asyncio.sleep(DATABASE_SAMPLE_SECONDS)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            recorder.forget_this_process()

    return sampling


def metrics_endpoint(recorder: Metrics, check: DatabaseCheck) -> HTTPRouteHandler:
    """``GET /metrics`` over ``recorder``, with the database sampled first."""

    @get(
        "/metrics",
        media_type=MediaType.TEXT,
        tags=["operations"],
        operation_id="metrics",
        summary="Prometheus metrics",
    )
    async def serve_metrics() -> Response[bytes]:
        recorder.observe_database(await check())
        return Response(recorder.exposition(), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics
