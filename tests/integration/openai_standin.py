"""An OpenAI-compatible ``/v1/chat/completions`` on a local port (what Ollama,
vLLM, llama.cpp and OpenRouter serve), streamed as the OpenAI API streams it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .standin import Recorded, Reply, StandIn, sse

__all__ = ["OpenAiStandIn", "Reply"]


class OpenAiStandIn(StandIn):
    def events(self, reply: Reply, request: Recorded) -> Iterator[bytes | None]:
        body = request.body or {}
        model = body.get("model", "stand-in")
        for n, piece in enumerate(reply.pieces):
            yield None
            delta: dict[str, Any] = {"content": piece}
            if n == 0:
                delta["role"] = "assistant"
            yield sse(self._chunk(model, delta, None))
        if reply.cut_after is not None or reply.hold:
            return  # the stream never ends properly
        yield sse(self._chunk(model, {}, "stop"))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and reply.usage is not None:
            prompt, completion = reply.usage
            yield sse(
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                }
            )
        yield b"data: [DONE]\n\n"

    def error_body(self, reply: Reply) -> dict[str, Any]:
        return {"error": {"message": f"stand-in error {reply.status}", "type": "server_error"}}

    @staticmethod
    def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
