"""Any OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenRouter, OpenAI)
through its streamed ``/v1/chat/completions``.

The answer arrives as Server-Sent Events: ``data: {chunk}`` lines, each with
the next piece in ``choices[0].delta.content``, then ``data: [DONE]``. Usage is
asked for with ``stream_options.include_usage`` and read from the chunk that
carries it, when the server sends one. Images travel as ``data:`` URLs.

``OPENAI_BASE_URL`` may name the server (``http://localhost:11434``) or its
API root (``https://openrouter.ai/api/v1``): a base ending in ``/v1`` gets
``/chat/completions``, any other ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from adapters.llm._common import (
    BROKE_OFF,
    QUOTA,
    TIMED_OUT,
    deadline_after,
    retry_after_seconds,
)
from gemini_core.entities import MessageRole
from gemini_core.errors import UpstreamError, UpstreamQuotaError, UpstreamTimeoutError
from gemini_core.llm import ChatTurn, LlmChunk, LlmRequest, Usage

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 10.0


def completions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _content(turn: ChatTurn) -> str | list[dict[str, Any]]:
    if not turn.images:
        return turn.text
    parts: list[dict[str, Any]] = [{"type": "text", "text": turn.text}]
    for image in turn.images:
        encoded = base64.b64encode(image.data).decode("ascii")
        parts.append(
            {"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{encoded}"}}
        )
    return parts


def request_body(request: LlmRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system_prompt:
        messages.append({"role": "system", "content": request.system_prompt})
    for turn in request.turns:
        role = "user" if turn.role is MessageRole.USER else "assistant"
        messages.append({"role": role, "content": _content(turn)})
    return {
        "model": request.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _status_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    log.warning("the model server answered %s: %s", status, text[:500])
    if status == 429:
        return UpstreamQuotaError(
            QUOTA, retry_after=retry_after_seconds(headers.get("retry-after"))
        )
    return UpstreamError(f"The model server answered with an error ({status}).")


class OpenAiCompatibleLlmClient:
    """The ``LlmClient`` port over an OpenAI-compatible chat completions API.

    On aiohttp rather than httpx: a streamed answer is thousands of small
    chunks, and aiohttp parses HTTP in C and hands over everything a read
    brought in one piece, where httpx's pure-Python stack (httpcore, h11)
    costs more per chunk than the rest of an answer's path together (py-spy,
    bench/streams.py). Connections are kept and reused between calls.
    """

    def __init__(self, *, base_url: str, api_key: str | None = None) -> None:
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._url = completions_url(base_url)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                # The call's own deadline bounds it; aiohttp only bounds connecting.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_SECONDS),
                json_serialize=_encode_json,
            )
        return self._session

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        deadline = deadline_after(request.timeout_seconds)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client().post(self._url, json=request_body(request))
            try:
                if response.status != 200:
                    async with asyncio.timeout_at(deadline):
                        text = await response.text(errors="replace")
                    raise _status_error(response.status, response.headers, text)
                async for item in _chunks(response.content.iter_any(), deadline):
                    yield item
            finally:
                # Whatever is left unread goes with the connection; a whole
                # answer leaves it for the next call.
                if response.content.at_eof():
                    response.release()
                else:
                    response.close()
        except TimeoutError as exc:
            raise UpstreamTimeoutError(TIMED_OUT) from exc
        except aiohttp.ClientError as exc:
            log.warning("the model server's answer broke off: %r", exc)
            raise UpstreamError(BROKE_OFF) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _encode_json(value: object) -> str:
    return msgspec.json.encode(value).decode()


async def _chunks(
    received: AsyncIterator[bytes], deadline: float
) -> AsyncIterator[LlmChunk | Usage]:
    """The pieces and usage in the event stream, up to ``[DONE]``. Lines are split
    here, with one bounded wait per network read; a read holds whatever arrived
    since the last, so a busy process pays per read, not per piece."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    events = _Events()
    while not events.finished:
        async with asyncio.timeout_at(deadline):
            data = await anext(received, None)
        if data is None:
            break
        pending += decoder.decode(data)
        *lines, pending = pending.split("\n")
        for line in lines:
            for item in events.read(line.removesuffix("\r")):
                yield item
            if events.finished:
                break
    if not (events.finished or events.ended):
        raise UpstreamError(BROKE_OFF)
    if events.usage is not None:
        yield events.usage


class _Events:
    """What the event stream's lines say: pieces, usage, and whether it ended."""

    def __init__(self) -> None:
        self.finished = False
        self.usage: Usage | None = None
        self._done = False

    def read(self, line: str) -> list[LlmChunk]:
        if not line.startswith("data:"):
            return []  # blank separators, comments (": keep-alive"), event names
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            self.finished = True
            return []
        chunk = _parse(data)
        if (reported := chunk.get("usage")) and isinstance(reported, dict):
            self.usage = Usage(
                prompt_tokens=_count(reported.get("prompt_tokens")),
                completion_tokens=_count(reported.get("completion_tokens")),
            )
        pieces = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                pieces.append(LlmChunk(text))
            self._done = self._done or bool(choice.get("finish_reason"))
        return pieces

    @property
    def ended(self) -> bool:
        """A finish reason was seen (the stream may still end without ``[DONE]``)."""
        return self._done


_decode = msgspec.json.Decoder().decode  # several times json's speed, on every piece


def _parse(data: str) -> dict[str, Any]:
    try:
        chunk = _decode(data)
    except msgspec.DecodeError as exc:
        raise UpstreamError("The model server sent something that is not JSON.") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("The model server sent something unexpected.")
    if error := chunk.get("error"):
        log.warning("the model server reported an error mid-stream: %s", str(error)[:500])
        code = error.get("code") if isinstance(error, dict) else None
        if code in (429, "429", "rate_limit_exceeded", "insufficient_quota"):
            raise UpstreamQuotaError(QUOTA, retry_after=retry_after_seconds(None))
        raise UpstreamError("The model server reported an error.")
    return chunk


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
