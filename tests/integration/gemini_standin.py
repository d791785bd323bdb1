"""The Gemini API's ``generateContent`` and ``streamGenerateContent`` on a local
port, for the real ``google-genai`` SDK pointed at it through its base URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .standin import Recorded, Reply, StandIn, sse

__all__ = ["GeminiStandIn", "Reply"]

_ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class GeminiStandIn(StandIn):
    def is_streamed(self, request: Recorded) -> bool:
        return ":streamGenerateContent" in request.path

    def events(self, reply: Reply, request: Recorded) -> Iterator[bytes | None]:
        for n, piece in enumerate(reply.pieces):
            yield None
            last = n == len(reply.pieces) - 1
            ends = last and reply.cut_after is None and not reply.hold
            yield sse(self._response([piece], reply, final=ends))
        if not reply.pieces:
            yield sse(self._response([], reply, final=True))

    def whole_answer(self, reply: Reply, request: Recorded) -> dict[str, Any]:
        return self._response(list(reply.pieces), reply, final=True)

    def error_body(self, reply: Reply) -> dict[str, Any]:
        details: list[dict[str, Any]] = []
        if reply.status == 429:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
            )
        return {
            "error": {
                "code": reply.status,
                "message": f"stand-in error {reply.status}",
                "status": _ERROR_STATUS.get(reply.status, "UNKNOWN"),
                "details": details,
            }
        }

    @staticmethod
    def _response(pieces: list[str], reply: Reply, *, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": p} for p in pieces]},
            "index": 0,
        }
        body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "stand-in"}
        if final:
            candidate["finishReason"] = "STOP"
        if final and reply.usage is not None:
            prompt, completion = reply.usage
            body["usageMetadata"] = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion,
            }
        return body
