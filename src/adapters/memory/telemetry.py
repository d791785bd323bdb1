"""Telemetry that keeps every event, for tests and examples. (As log lines and
fanned out: ``adapters.telemetry``; as metrics: ``adapters.prometheus``.)"""

from __future__ import annotations

from gemini_core.telemetry import FileUploaded, LoginFailed, ModelCall, QuotaRefused

__all__ = ["RecordingTelemetry"]


class RecordingTelemetry:
    """Keeps every event in ``events``, in order, for tests and examples."""

    def __init__(self) -> None:
        self.events: list[ModelCall | QuotaRefused | FileUploaded | LoginFailed] = []

    def model_called(self, call: ModelCall) -> None:
        self.events.append(call)

    def quota_refused(self, refusal: QuotaRefused) -> None:
        self.events.append(refusal)

    def file_uploaded(self, upload: FileUploaded) -> None:
        self.events.append(upload)

    def login_failed(self, failure: LoginFailed) -> None:
        self.events.append(failure)

    def model_calls(self) -> list[ModelCall]:
        return [event for event in self.events if isinstance(event, ModelCall)]
