"""The core's events and cache lookups as Prometheus metrics.

Both register their metrics in a registry they are given (the one the HTTP
layer serves at ``/metrics``), so nothing here is process-wide.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from gemini_core.ports import Cache, CacheStats
from gemini_core.telemetry import FileUploaded, LoginFailed, ModelCall, QuotaRefused

__all__ = ["MeteredCache", "PrometheusTelemetry"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


class PrometheusTelemetry:
    """The ``Telemetry`` port as counters and histograms. ``provider_of`` names
    the provider that serves a model (a label of the token counts)."""

    def __init__(
        self, registry: CollectorRegistry, *, provider_of: Callable[[str], str] = lambda _: ""
    ) -> None:
        self._provider_of = provider_of
        r = registry
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
            "Tokens sent to (prompt) and received from (completion) a model, as the "
            "provider reported them or (when it did not) estimated.",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.quota_refusals = Counter(
            "gemini_quota_refusals",
            "Sends and regenerates refused by a daily quota, by unit (messages, tokens).",
            ["unit"],
            registry=r,
        )
        self.uploads = Counter(
            "gemini_uploads", "Images stored, by content type.", ["content_type"], registry=r
        )
        self.upload_bytes = Counter(
            "gemini_upload_bytes", "Bytes of images stored.", ["content_type"], registry=r
        )
        self.login_failures = Counter(
            "gemini_login_failures",
            "Refused sign-ins, by reason (unknown_email, wrong_password).",
            ["reason"],
            registry=r,
        )

    def model_called(self, call: ModelCall) -> None:
        self.model_calls.labels(call.model, call.outcome).inc()
        if call.first_token_seconds is not None:
            self.first_token.labels(call.model).observe(call.first_token_seconds)
        self.model_duration.labels(call.model).observe(call.duration_seconds)
        provider = self._provider_of(call.model)
        if call.prompt_tokens:
            self.tokens.labels(provider, call.model, "prompt").inc(call.prompt_tokens)
        if call.completion_tokens:
            self.tokens.labels(provider, call.model, "completion").inc(call.completion_tokens)

    def quota_refused(self, refusal: QuotaRefused) -> None:
        self.quota_refusals.labels(refusal.unit).inc()

    def file_uploaded(self, upload: FileUploaded) -> None:
        self.uploads.labels(upload.content_type).inc()
        self.upload_bytes.labels(upload.content_type).inc(upload.size)

    def login_failed(self, failure: LoginFailed) -> None:
        self.login_failures.labels(failure.reason).inc()


class MeteredCache:
    """The ``Cache`` port around another one, counting hits and misses."""

    def __init__(self, inner: Cache, registry: CollectorRegistry) -> None:
        self._inner = inner
        lookups = Counter(
            "gemini_cache_lookups",
            "Cache lookups by result (hit, miss).",
            ["result"],
            registry=registry,
        )
        self._hit, self._miss = lookups.labels("hit"), lookups.labels("miss")

    async def get(self, key: str) -> bytes | None:
        value = await self._inner.get(key)
        (self._hit if value is not None else self._miss).inc()
        return value

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        await self._inner.set(key, value, ttl_seconds=ttl_seconds)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def stats(self) -> CacheStats:
        return await self._inner.stats()
