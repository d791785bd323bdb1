"""The ``Telemetry`` port as log lines, and fanned out.

``LogTelemetry`` writes each event as one record with its fields as
``extra`` (the JSON log shows them): model calls on ``gemini.llm``, uploads on
``gemini.files``, failed logins on ``gemini.security``. Prometheus metrics are
``adapters.prometheus.PrometheusTelemetry``; a recording for tests is
``adapters.memory.RecordingTelemetry``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from gemini_core.telemetry import FileUploaded, LoginFailed, ModelCall, QuotaRefused, Telemetry

__all__ = ["FanOutTelemetry", "LogTelemetry"]

llm_log = logging.getLogger("gemini.llm")
files_log = logging.getLogger("gemini.files")
security_log = logging.getLogger("gemini.security")
log = logging.getLogger(__name__)


class LogTelemetry:
    def model_called(self, call: ModelCall) -> None:
        llm_log.info(
            "model call (%s) %s",
            call.purpose,
            call.outcome,
            extra={
                "event": "model_call",
                "purpose": call.purpose,
                "model": call.model,
                "outcome": call.outcome,
                "chat_id": call.chat_id,
                "user_id": call.user_id,
                "duration_seconds": call.duration_seconds,
                "first_token_seconds": call.first_token_seconds,
                "pieces": call.pieces,
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
            },
        )

    def quota_refused(self, refusal: QuotaRefused) -> None:
        llm_log.info(
            "daily %s quota refused a start",
            refusal.unit,
            extra={"event": "quota_refused", "user_id": refusal.user_id, "unit": refusal.unit},
        )

    def file_uploaded(self, upload: FileUploaded) -> None:
        files_log.info(
            "file uploaded",
            extra={
                "event": "file_uploaded",
                "user_id": upload.user_id,
                "content_type": upload.content_type,
                "size": upload.size,
            },
        )

    def login_failed(self, failure: LoginFailed) -> None:
        # The account when there is one, else the address that was tried.
        who = {"email": failure.email} if failure.user_id is None else {"user_id": failure.user_id}
        security_log.warning("login failed", extra={"event": "login_failed", **who})


class FanOutTelemetry:
    """Hands each event to every sink; one that fails is logged and skipped."""

    def __init__(self, sinks: Iterable[Telemetry]) -> None:
        self._sinks = tuple(sinks)

    def _each(self, deliver: Callable[[Telemetry], None]) -> None:
        for sink in self._sinks:
            try:
                deliver(sink)
            except Exception:
                log.exception("telemetry sink %r failed", sink)

    def model_called(self, call: ModelCall) -> None:
        self._each(lambda sink: sink.model_called(call))

    def quota_refused(self, refusal: QuotaRefused) -> None:
        self._each(lambda sink: sink.quota_refused(refusal))

    def file_uploaded(self, upload: FileUploaded) -> None:
        self._each(lambda sink: sink.file_uploaded(upload))

    def login_failed(self, failure: LoginFailed) -> None:
        self._each(lambda sink: sink.login_failed(failure))
