"""The offline model: no account, no network, the same answer every time.

It answers by quoting the user's last message and says plainly that it is
the offline model, so nobody mistakes it for a real one. The answer streams
in several pieces, like a real model's, optionally paced so a browser shows
it arriving.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from adapters.llm._common import TIMED_OUT, deadline_after
from gemini_core.errors import UpstreamTimeoutError
from gemini_core.llm import LlmChunk, LlmRequest, Usage
from gemini_core.usage import estimate_tokens

MODEL = "echo"
_PIECE = re.compile(r"\S+\s*")


def echo_answer(request: LlmRequest) -> str:
    question = request.turns[-1] if request.turns else None
    text = question.text.strip() if question is not None else ""
    parts = [
        "I am the offline echo model, not a real one, so I can only repeat what you say.",
        f"You said: “{text}”" if text else "You said nothing I could repeat.",
    ]
    if question is not None and question.images:
        count = len(question.images)
        parts.append(f"You attached {count} image{'s' if count != 1 else ''}.")
    earlier = len(request.turns) - 1
    if earlier > 0:
        parts.append(f"I was shown {earlier} earlier message{'s' if earlier != 1 else ''}.")
    if request.system_prompt:
        parts.append("I was given a system prompt too.")
    parts.append("Set GOOGLE_API_KEY, or LLM_PROVIDER=openai, for real answers.")
    return " ".join(parts)


class EchoLlmClient:
    """The ``LlmClient`` port, offline. ``words_per_piece`` words per piece,
    ``piece_delay_seconds`` between pieces."""

    def __init__(self, *, words_per_piece: int = 3, piece_delay_seconds: float = 0.0) -> None:
        self._words_per_piece = max(1, words_per_piece)
        self._delay = piece_delay_seconds

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        deadline = deadline_after(request.timeout_seconds)
        answer = echo_answer(request)
        words = _PIECE.findall(answer)
        for start in range(0, len(words), self._words_per_piece):
            if start:  # the first piece at once, as a model that answers at once
                try:
                    async with asyncio.timeout_at(deadline):
                        await asyncio.sleep(self._delay)
                except TimeoutError as exc:
                    raise UpstreamTimeoutError(TIMED_OUT) from exc
            yield LlmChunk("".join(words[start : start + self._words_per_piece]))
        seen = [request.system_prompt or "", *(turn.text for turn in request.turns)]
        yield Usage(
            prompt_tokens=sum(estimate_tokens(text) for text in seen),
            completion_tokens=estimate_tokens(answer),
        )

    async def aclose(self) -> None:
        pass
