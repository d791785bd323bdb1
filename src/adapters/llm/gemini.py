"""Gemini through Google's ``google-genai`` SDK, streamed.

``client.aio.models.generate_content_stream`` with the system prompt as
``system_instruction``, the conversation as ``user`` / ``model`` contents and
images as inline parts. The SDK's own retries, automatic function calling and
automatic continuation are off: one call is one request, and its failures are
ours to report. ``GEMINI_BASE_URL`` becomes the client's base URL.

Errors: a 429 (``RESOURCE_EXHAUSTED``) is ``UpstreamQuotaError`` with the
delay Google suggests; any other error status, a transport failure or a
malformed stream is ``UpstreamError``; the call's deadline is
``UpstreamTimeoutError``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncGenerator

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from adapters.llm._common import BROKE_OFF, QUOTA, TIMED_OUT, deadline_after
from gemini_core.entities import MessageRole
from gemini_core.errors import UpstreamError, UpstreamQuotaError, UpstreamTimeoutError
from gemini_core.llm import ChatTurn, LlmChunk, LlmRequest, Usage

log = logging.getLogger(__name__)

_DELAY = re.compile(r"([0-9]+(?:\.[0-9]+)?)s")
_END = object()
_Arrival = object
_DEFAULT_RETRY_AFTER = 30


def contents_of(turns: tuple[ChatTurn, ...]) -> list[types.Content]:
    return [
        types.Content(
            role="user" if turn.role is MessageRole.USER else "model",
            parts=[
                types.Part(text=turn.text),
                *(
                    types.Part(inline_data=types.Blob(mime_type=image.mime_type, data=image.data))
                    for image in turn.images
                ),
            ],
        )
        for turn in turns
    ]


def _config(request: LlmRequest) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        system_instruction=request.system_prompt or None,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        automatic_continuation=False,
    )


def _text_of(chunk: types.GenerateContentResponse) -> str:
    """The answer's text in this chunk; the model's thoughts are not part of it."""
    if not chunk.candidates:
        return ""
    content = chunk.candidates[0].content
    if content is None or not content.parts:
        return ""
    return "".join(part.text for part in content.parts if part.text and not part.thought)


def _usage_of(metadata: types.GenerateContentResponseUsageMetadata) -> Usage:
    """Thinking tokens are billed as output, so they count as completion tokens."""
    completion = metadata.candidates_token_count
    if metadata.thoughts_token_count:
        completion = (completion or 0) + metadata.thoughts_token_count
    return Usage(prompt_tokens=metadata.prompt_token_count, completion_tokens=completion)


def _retry_after(error: genai_errors.APIError) -> int:
    """The delay in the error's ``google.rpc.RetryInfo`` detail, else a default."""
    body = error.details if isinstance(error.details, dict) else {}
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith("RetryInfo"):
            continue
        if match := _DELAY.fullmatch(str(detail.get("retryDelay", ""))):
            return max(1, math.ceil(float(match[1])))
    return _DEFAULT_RETRY_AFTER


def _translated(error: genai_errors.APIError) -> UpstreamError:
    log.warning("Gemini answered %s %s: %s", error.code, error.status, error.message)
    if error.code == 429:
        return UpstreamQuotaError(QUOTA, retry_after=_retry_after(error))
    return UpstreamError(f"The model answered with an error ({error.code}).")


class GeminiLlmClient:
    """The ``LlmClient`` port on the Gemini API."""

    def __init__(self, *, api_key: str, base_url: str | None = None) -> None:
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1)
            ),
        )

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        deadline = deadline_after(request.timeout_seconds)
        usage: Usage | None = None
        # The SDK's stream is read by a task of its own: closing the SDK's
        # generator would not close its HTTP response (its inner generators
        # wait for the garbage collector), but cancelling the task reading it
        # unwinds them all at once and hangs up.
        arrived: asyncio.Queue[_Arrival] = asyncio.Queue()
        pump = asyncio.get_running_loop().create_task(self._pump(request, arrived))
        try:
            while True:
                async with asyncio.timeout_at(deadline):
                    item = await arrived.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, types.GenerateContentResponse)
                if item.prompt_feedback and item.prompt_feedback.block_reason:
                    reason = item.prompt_feedback.block_reason
                    raise UpstreamError(f"The model declined to answer ({reason}).")
                if item.usage_metadata is not None:
                    usage = _usage_of(item.usage_metadata)
                if text := _text_of(item):
                    yield LlmChunk(text)
        except UpstreamError:
            raise
        except TimeoutError as exc:
            raise UpstreamTimeoutError(TIMED_OUT) from exc
        except genai_errors.APIError as exc:
            raise _translated(exc) from exc
        except Exception as exc:
            # The SDK's transport (aiohttp, or httpx), its stream parsing and its
            # validation each have their own errors: all mean a broken answer.
            log.warning("Gemini's answer broke off: %r", exc)
            raise UpstreamError(BROKE_OFF) from exc
        finally:
            pump.cancel()
        if usage is not None:
            yield usage

    async def _pump(self, request: LlmRequest, arrived: asyncio.Queue[_Arrival]) -> None:
        try:
            chunks = await self._client.aio.models.generate_content_stream(
                model=request.model, contents=contents_of(request.turns), config=_config(request)
            )
            async for chunk in chunks:
                arrived.put_nowait(chunk)
        except Exception as exc:
            arrived.put_nowait(exc)
        else:
            arrived.put_nowait(_END)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()  # the SDK makes a synchronous client too
