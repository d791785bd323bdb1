"""The ``LlmClient`` port: one streamed call to a language model.

A call carries everything the model sees (the model's name, the system
prompt, the conversation with its images) and the time it may take; the
answer comes back in pieces as they arrive, then, when the model reports it,
the token usage. Adapters turn their SDK's and transport's failures into the
core's ``UpstreamQuotaError`` (the provider refused for quota or rate),
``UpstreamTimeoutError`` (the call outlived its time) and ``UpstreamError``
(any other error status, a broken or malformed stream).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from gemini_core.entities import MessageRole


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image shown to the model: its bytes and their media type (``image/png``, ...)."""

    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the conversation as the model sees it."""

    role: MessageRole
    text: str
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmRequest:
    model: str
    system_prompt: str | None
    turns: tuple[ChatTurn, ...]
    """Oldest first; the last one is the user's new message."""
    timeout_seconds: float
    """For the whole call, from the request to the last piece."""


@dataclass(frozen=True, slots=True)
class LlmChunk:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the call used, as the provider counted them."""

    prompt_tokens: int | None
    completion_tokens: int | None


class LlmClient(Protocol):
    def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        """The answer in pieces as the model produces them, then its ``Usage``
        (at most once, last, and only when the provider reports it).

        Nothing is sent before the first ``__anext__``. Closing the iterator
        early (or cancelling the task reading it) abandons the call and frees
        its connection at once. Raises ``UpstreamQuotaError``,
        ``UpstreamTimeoutError`` or ``UpstreamError``, before or between pieces.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the client is not used afterwards."""
        ...
