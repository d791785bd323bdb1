"""Prometheus metrics, served at ``GET /metrics``.

One ``Metrics`` per process (``metrics()``), built on first use. With several
workers, ``gemini-backend serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at an
empty directory before they start: each worker then keeps its values in files
there, and whichever worker answers ``/metrics`` reads them all
(``MultiProcessCollector``).

Model calls are counted from the log: the chat service logs one record per
call on the ``gemini.llm`` logger, and ``ModelCallMetrics`` (a logging
handler) turns it into metrics, so the core needs no metrics library. The
record's ``extra`` fields are the contract::

    log.info("model call", extra={
        "event": "model_call", "model": "gemini-2.5-flash",
        "outcome": "ok",                # or "error", "timeout", "cancelled", ...
        "first_token_seconds": 0.42,    # None when no token came
        "duration_seconds": 3.1,
        "prompt_tokens": 812, "completion_tokens": 230,  # None when unknown
    })
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.di import NamedDependency
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

from gemini_core.ports import Cache, CacheStats, DatabaseStatus
from web.container import Container

__all__ = [
    "MeteredCache",
    "Metrics",
    "ModelCallMetrics",
    "database_sampler",
    "metrics",
    "metrics_endpoint",
    "multiprocess_directory",
    "watch_model_calls",
]

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
DATABASE_SAMPLE_SECONDS = 15.0

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    return MULTIPROC_DIR in os.environ


class Metrics:
    """Every metric the service exposes, with a small recording API."""

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
        self.cache = Counter(
            "gemini_cache_lookups", "Cache lookups by result (hit, miss).", ["result"], registry=r
        )
        self.model_calls = Counter(
            "gemini_model_calls", "Calls to a model, by outcome.", ["model", "outcome"], registry=r
        )
        self.first_token = Histogram(
            "gemini_model_time_to_first_token_seconds",
            "Time from sending a prompt to the first token of the answer.",
            ["model"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.model_duration = Histogram(
            "gemini_model_call_duration_seconds",
            "Time a model call took, to its last token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "gemini_model_tokens",
            "Tokens sent to (prompt) and received from (completion) a model.",
            ["model", "kind"],
            registry=r,
        )
        # Children by label values, found without the library's checks and lock.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._rate_limit_children: dict[tuple[str, str], Any] = {}
        self._cache_hit = self.cache.labels("hit")
        self._cache_miss = self.cache.labels("miss")

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

    def observe_cache(self, *, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def observe_database(self, status: DatabaseStatus) -> None:
        self.database_up.set(1 if status.healthy else 0)
        for figure, value in status.pool.items():
            self.database_pool.labels(figure).set(value)

    def record_model_call(
        self,
        model: str,
        outcome: str,
        *,
        first_token_seconds: float | None = None,
        duration_seconds: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        self.model_calls.labels(model, outcome).inc()
        if first_token_seconds is not None:
            self.first_token.labels(model).observe(first_token_seconds)
        if duration_seconds is not None:
            self.model_duration.labels(model).observe(duration_seconds)
        if prompt_tokens:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, "completion").inc(completion_tokens)

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


@cache
def metrics() -> Metrics:
    """This process's metrics."""
    return Metrics()


class MeteredCache:
    """The ``Cache`` port around another one, counting hits and misses."""

    def __init__(self, inner: Cache, recorder: Metrics) -> None:
        self._inner = inner
        self._metrics = recorder

    async def get(self, key: str) -> bytes | None:
        value = await self._inner.get(key)
        self._metrics.observe_cache(hit=value is not None)
        return value

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        await self._inner.set(key, value, ttl_seconds=ttl_seconds)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def stats(self) -> CacheStats:
        return await self._inner.stats()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ModelCallMetrics(logging.Handler):
    """Turns the ``gemini.llm`` logger's ``model_call`` records into metrics."""

    def __init__(self, recorder: Metrics) -> None:
        super().__init__(logging.INFO)
        self._metrics = recorder

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        if fields.get("event") != "model_call" or not isinstance(fields.get("model"), str):
            return
        try:
            prompt, completion = (
                _number(fields.get("prompt_tokens")),
                _number(fields.get("completion_tokens")),
            )
            self._metrics.record_model_call(
                fields["model"],
                str(fields.get("outcome") or "ok"),
                first_token_seconds=_number(fields.get("first_token_seconds")),
                duration_seconds=_number(fields.get("duration_seconds")),
                prompt_tokens=int(prompt) if prompt else None,
                completion_tokens=int(completion) if completion else None,
            )
        except Exception:
            self.handleError(record)


def watch_model_calls(recorder: Metrics) -> None:
    """Count the ``gemini.llm`` records, whatever ``LOG_LEVEL`` says (the log
    handlers still filter by it)."""
    logger = logging.getLogger("gemini.llm")
    for handler in logger.handlers[:]:
        if isinstance(handler, ModelCallMetrics):
            logger.removeHandler(handler)
    logger.addHandler(ModelCallMetrics(recorder))
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


@contextlib.asynccontextmanager
async def database_sampler(app: Litestar) -> AsyncIterator[None]:
    """A lifespan: sample the database pool into the gauges every few seconds,
    so each worker's figures stay current whichever worker is scraped."""
    recorder = metrics()

    async def sample() -> None:
        container: Container = app.state.container
        while True:
            with contextlib.suppress(Exception):
                recorder.observe_database(await container.database.check())
            await asyncio.sleep(DATABASE_SAMPLE_SECONDS)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        recorder.forget_this_process()


@get(
    "/metrics",
    media_type=MediaType.TEXT,
    tags=["operations"],
    operation_id="metrics",
    summary="Prometheus metrics",
)
async def metrics_endpoint(container: NamedDependency[Container]) -> Response[bytes]:
    recorder = metrics()
    recorder.observe_database(await container.database.check())
    return Response(recorder.exposition(), media_type=CONTENT_TYPE_LATEST)
