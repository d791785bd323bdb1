"""The OpenAI-compatible adapter's own line splitting, over reads cut anywhere:
in the middle of a line, of a ``\\r\\n``, of a multi-byte character."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from adapters.llm.openai import _chunks
from gemini_core.errors import UpstreamError
from gemini_core.llm import LlmChunk, Usage


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\r\n\r\n"


def piece(text: str) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text}}]})


async def stream_of(body: bytes, cut_every: int) -> list[LlmChunk | Usage]:
    """What the adapter makes of ``body`` arriving in reads of ``cut_every`` bytes."""

    async def reads() -> AsyncIterator[bytes]:
        for i in range(0, len(body), cut_every):
            yield body[i : i + cut_every]

    deadline = asyncio.get_running_loop().time() + 10
    return [item async for item in _chunks(reads(), deadline)]


BODY = (
    b": keep-alive\r\n\r\n"
    + piece("Grüße, ")
    + piece("日本語 ")
    + piece("and 🙂")
    + event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + event({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}})
    + b"data: [DONE]\r\n\r\n"
)


@pytest.mark.parametrize("cut_every", [1, 2, 3, 7, 64, len(BODY)])
async def test_pieces_come_whole_however_the_reads_are_cut(cut_every: int) -> None:
    items = await stream_of(BODY, cut_every)
    assert items == [
        LlmChunk("Grüße, "),
        LlmChunk("日本語 "),
        LlmChunk("and 🙂"),
        Usage(prompt_tokens=4, completion_tokens=5),
    ]


async def test_a_stream_that_ends_without_finishing_is_broken_off() -> None:
    with pytest.raises(UpstreamError):
        await stream_of(piece("Half") + piece(" an answer"), 5)


async def test_a_finish_reason_without_done_still_ends_the_answer() -> None:
    body = piece("All") + event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert await stream_of(body, 3) == [LlmChunk("All")]
