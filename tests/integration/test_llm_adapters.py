"""Each model adapter against a real HTTP stand-in of its provider: the real
``google-genai`` SDK through its base URL, and httpx for OpenAI-compatible
servers. What reaches the model, what comes back, and how every failure is
translated."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.llm import EchoLlmClient, GeminiLlmClient, OpenAiCompatibleLlmClient
from adapters.llm._common import retry_after_seconds
from adapters.llm.openai import completions_url
from gemini_core.entities import MessageRole
from gemini_core.errors import UpstreamError, UpstreamQuotaError, UpstreamTimeoutError
from gemini_core.llm import ChatTurn, ImagePart, LlmChunk, LlmClient, LlmRequest, Usage

from .gemini_standin import GeminiStandIn
from .openai_standin import OpenAiStandIn
from .standin import Recorded, Reply, StandIn

PNG = b"\x89PNG\r\n\x1a\nnot really a picture"


@dataclass
class Seen:
    """What a request carried, whichever provider's format it was in."""

    model: str
    system: str | None
    turns: list[tuple[str, str, list[tuple[str, bytes]]]]


def seen_by_gemini(request: Recorded) -> Seen:
    body = request.body
    system = body.get("systemInstruction")
    turns = []
    for content in body["contents"]:
        text = "".join(p.get("text", "") for p in content["parts"])
        # The SDK writes the blob's type in snake case and its bytes in URL-safe
        # base64; the API takes either spelling and either alphabet.
        images = [
            (
                p["inlineData"].get("mimeType") or p["inlineData"]["mime_type"],
                base64.urlsafe_b64decode(p["inlineData"]["data"]),
            )
            for p in content["parts"]
            if "inlineData" in p
        ]
        turns.append(("user" if content["role"] == "user" else "assistant", text, images))
    model = request.path.split("/models/")[1].split(":")[0]
    return Seen(model, system["parts"][0]["text"] if system else None, turns)


def seen_by_openai(request: Recorded) -> Seen:
    body = request.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    system = None
    turns = []
    for message in body["messages"]:
        if message["role"] == "system":
            system = message["content"]
            continue
        content = message["content"]
        if isinstance(content, str):
            turns.append((message["role"], content, []))
            continue
        text = "".join(p["text"] for p in content if p["type"] == "text")
        images = []
        for part in content:
            if part["type"] == "image_url":
                head, _, data = part["image_url"]["url"].partition(",")
                mime = head.removeprefix("data:").removesuffix(";base64")
                images.append((mime, base64.b64decode(data)))
        turns.append((message["role"], text, images))
    return Seen(body["model"], system, turns)


@dataclass
class Provider:
    name: str
    client: LlmClient
    standin: StandIn
    seen: Any

    @property
    def last(self) -> Seen:
        result: Seen = self.seen(self.standin.requests[-1])
        return result


@pytest.fixture(params=["gemini", "openai"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    standin: StandIn
    if request.param == "gemini":
        standin = GeminiStandIn().start()
        client: LlmClient = GeminiLlmClient(api_key="test-key", base_url=standin.url)
        seen = seen_by_gemini
    else:
        standin = OpenAiStandIn().start()
        client = OpenAiCompatibleLlmClient(base_url=standin.url, api_key="test-key")
        seen = seen_by_openai
    try:
        yield Provider(request.param, client, standin, seen)
    finally:
        await client.aclose()
        standin.stop()


@pytest.fixture
async def advance_loop_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Moves the running event loop's clock forward by so many seconds, as if
    they had passed: the loop's timers, ``asyncio.timeout`` among them, go by it."""
    loop = asyncio.get_running_loop()
    real_time = loop.time
    skew = 0.0

    def skewed_time() -> float:
        return real_time() + skew

    def advance(seconds: float) -> None:
        nonlocal skew
        skew += seconds

    monkeypatch.setattr(loop, "time", skewed_time)
    return advance


def ask(text: str = "Hi", *, timeout: float = 5.0, **fields: Any) -> LlmRequest:
    return LlmRequest(
        model=fields.pop("model", "test-model"),
        system_prompt=fields.pop("system_prompt", None),
        turns=fields.pop("turns", (ChatTurn(role=MessageRole.USER, text=text),)),
        timeout_seconds=timeout,
    )


async def collect(client: LlmClient, request: LlmRequest) -> tuple[list[str], list[Usage]]:
    pieces: list[str] = []
    usages: list[Usage] = []
    async for item in client.stream(request):
        if isinstance(item, LlmChunk):
            assert not usages, "usage comes last"
            pieces.append(item.text)
        else:
            usages.append(item)
    return pieces, usages


async def collect_until_error(
    client: LlmClient, request: LlmRequest
) -> tuple[list[str], Exception | None]:
    pieces: list[str] = []
    try:
        async for item in client.stream(request):
            if isinstance(item, LlmChunk):
                pieces.append(item.text)
    except Exception as exc:
        return pieces, exc
    return pieces, None


async def test_the_answer_streams_in_pieces_then_usage(provider: Provider) -> None:
    provider.standin.plan(Reply(pieces=("One", " two", " three"), usage=(21, 3)))
    pieces, usages = await collect(provider.client, ask())
    assert pieces == ["One", " two", " three"]
    assert usages == [Usage(prompt_tokens=21, completion_tokens=3)]


async def test_no_reported_usage_means_no_usage(provider: Provider) -> None:
    provider.standin.plan(Reply(pieces=("Fine",), usage=None))
    pieces, usages = await collect(provider.client, ask())
    assert (pieces, usages) == (["Fine"], [])


async def test_pieces_arrive_as_the_model_sends_them(provider: Provider) -> None:
    # The model sends its second piece only once the first has reached the
    # reader: an adapter holding pieces back would end in its timeout instead.
    first_arrived = threading.Event()
    provider.standin.plan(Reply(pieces=("first", " second"), piece_gates={1: first_arrived}))
    arrived: list[LlmChunk | Usage] = []
    async for item in provider.client.stream(ask()):
        arrived.append(item)
        first_arrived.set()
    assert arrived == [LlmChunk("first"), LlmChunk(" second"), Usage(11, 7)]


async def test_system_prompt_history_and_images_reach_the_model(provider: Provider) -> None:
    turns = (
        ChatTurn(role=MessageRole.USER, text="Look at this", images=(ImagePart("image/png", PNG),)),
        ChatTurn(role=MessageRole.ASSISTANT, text="A picture."),
        ChatTurn(
            role=MessageRole.USER,
            text="And these?",
            images=(ImagePart("image/jpeg", b"\xff\xd8\xffjpeg"), ImagePart("image/webp", b"RIFF")),
        ),
    )
    await collect(provider.client, ask(model="some-model", system_prompt="Be brief.", turns=turns))
    seen = provider.last
    assert seen.model == "some-model"
    assert seen.system == "Be brief."
    assert seen.turns == [
        ("user", "Look at this", [("image/png", PNG)]),
        ("assistant", "A picture.", []),
        ("user", "And these?", [("image/jpeg", b"\xff\xd8\xffjpeg"), ("image/webp", b"RIFF")]),
    ]
    headers = provider.standin.requests[-1].headers
    if provider.name == "gemini":
        assert headers["x-goog-api-key"] == "test-key"
    else:
        assert headers["authorization"] == "Bearer test-key"


async def test_no_system_prompt_sends_none(provider: Provider) -> None:
    await collect(provider.client, ask())
    assert provider.last.system is None


async def test_a_429_is_a_quota_error_with_retry_after(provider: Provider) -> None:
    provider.standin.plan(Reply(status=429, headers={"Retry-After": "17"}))
    with pytest.raises(UpstreamQuotaError) as caught:
        await collect(provider.client, ask())
    assert caught.value.retry_after == 17
    assert len(provider.standin.requests) == 1, "no retries behind our back"


@pytest.mark.parametrize("status", [500, 503, 400])
async def test_other_error_statuses_are_upstream_errors(provider: Provider, status: int) -> None:
    provider.standin.plan(Reply(status=status))
    with pytest.raises(UpstreamError) as caught:
        await collect(provider.client, ask())
    assert type(caught.value) is UpstreamError
    assert str(status) in caught.value.detail
    assert "stand-in" not in caught.value.detail, "the provider's words stay in the log"
    assert len(provider.standin.requests) == 1


async def test_a_cut_mid_stream_is_an_upstream_error_after_the_pieces(provider: Provider) -> None:
    provider.standin.plan(Reply(pieces=("Half", " an", " answer"), cut_after=2))
    pieces, error = await collect_until_error(provider.client, ask())
    assert type(error) is UpstreamError
    assert pieces == ["Half", " an"]


async def test_a_model_that_never_answers_times_out_and_is_hung_up_on(
    provider: Provider,
) -> None:
    # Not even the status line comes, so only the call's own deadline can end it.
    provider.standin.plan(Reply(answer_gate=threading.Event()))
    with pytest.raises(UpstreamTimeoutError):
        await collect(provider.client, ask(timeout=0.2))
    await provider.standin.wait_until(lambda: provider.standin.left_early == 1)


async def test_the_timeout_covers_the_whole_call(
    provider: Provider, advance_loop_clock: Callable[[float], None]
) -> None:
    # One deadline for the call, not one per wait: the first piece comes at
    # once; the reader then holds the stream past the deadline, and only then
    # may the model send its second piece. A timeout per wait (or none after
    # the first byte) would hand that piece over.
    second = threading.Event()
    provider.standin.plan(Reply(pieces=("a", "b"), piece_gates={1: second}, hold=True))
    stream = provider.client.stream(ask(timeout=60))
    assert await anext(stream) == LlmChunk("a")
    advance_loop_clock(61)
    second.set()
    with pytest.raises(UpstreamTimeoutError):
        await anext(stream)
    await provider.standin.wait_until(lambda: provider.standin.left_early == 1)


async def test_closing_the_stream_early_hangs_up_on_the_model(provider: Provider) -> None:
    provider.standin.plan(Reply(pieces=("one", " two"), hold=True))
    stream = provider.client.stream(ask())
    first = await anext(stream)
    assert first == LlmChunk("one")
    await stream.aclose()
    await provider.standin.wait_until(lambda: provider.standin.left_early == 1)


async def test_cancelling_the_reader_hangs_up_on_the_model(provider: Provider) -> None:
    provider.standin.plan(Reply(pieces=("one",), hold=True))
    got_one = asyncio.Event()

    async def read() -> None:
        async for _ in provider.client.stream(ask()):
            got_one.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.standin.wait_until(lambda: provider.standin.left_early == 1)


async def test_calls_run_concurrently(provider: Provider) -> None:
    # No answer comes before all five calls have reached the model, which
    # calls made one at a time never would.
    all_asked = threading.Event()
    provider.standin.plan(*(Reply(pieces=(f"n{n}",), answer_gate=all_asked) for n in range(5)))
    calls = asyncio.gather(*(collect(provider.client, ask()) for _ in range(5)))
    try:
        await provider.standin.wait_until(lambda: len(provider.standin.requests) == 5)
    finally:
        all_asked.set()
    results = await calls
    assert sorted(p[0][0] for p in results) == [f"n{n}" for n in range(5)]


# --- OpenAI-compatible details ------------------------------------------------------


def test_the_completions_url_follows_the_base() -> None:
    assert completions_url("http://localhost:11434") == "http://localhost:11434/v1/chat/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert (
        completions_url("https://openrouter.ai/api/v1")
        == "https://openrouter.ai/api/v1/chat/completions"
    )


@pytest.fixture
def openai_standin() -> Iterator[OpenAiStandIn]:
    with OpenAiStandIn() as standin:
        yield standin


async def test_an_openai_base_url_with_v1_and_no_key(openai_standin: OpenAiStandIn) -> None:
    client = OpenAiCompatibleLlmClient(base_url=openai_standin.url + "/v1")
    try:
        pieces, _ = await collect(client, ask())
    finally:
        await client.aclose()
    assert "".join(pieces) == "Hello, world!"
    request = openai_standin.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert "authorization" not in request.headers


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("0.2") == 1
    assert retry_after_seconds(None) == 30
    assert retry_after_seconds("soon") == 30
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def http_date(when: datetime) -> str:
        return email.utils.format_datetime(when, usegmt=True)

    assert retry_after_seconds(http_date(now + timedelta(seconds=60)), now=now) == 60
    assert retry_after_seconds(http_date(now - timedelta(hours=1)), now=now) == 1


# --- the offline model ----------------------------------------------------------------


async def test_echo_streams_a_deterministic_answer_saying_it_is_offline() -> None:
    client = EchoLlmClient(words_per_piece=2)
    request = ask(
        "What is the capital of France?",
        system_prompt="Be brief.",
        turns=(
            ChatTurn(role=MessageRole.USER, text="Hello"),
            ChatTurn(role=MessageRole.ASSISTANT, text="Hi"),
            ChatTurn(
                role=MessageRole.USER,
                text="What is the capital of France?",
                images=(ImagePart("image/png", PNG),),
            ),
        ),
    )
    first = await collect(client, request)
    second = await collect(client, request)
    assert first == second
    pieces, usages = first
    answer = "".join(pieces)
    assert len(pieces) > 3
    assert "offline" in answer
    assert "“What is the capital of France?”" in answer
    assert "1 image" in answer
    assert "2 earlier messages" in answer
    # Estimated as the contract says: about four characters a token.
    assert usages[0].completion_tokens == math.ceil(len(answer) / 4)
    seen = [request.system_prompt or "", *(turn.text for turn in request.turns)]
    assert usages[0].prompt_tokens == sum(math.ceil(len(text) / 4) for text in seen)


async def test_echo_respects_the_timeout() -> None:
    client = EchoLlmClient(piece_delay_seconds=0.2)
    with pytest.raises(UpstreamTimeoutError):
        await collect(client, ask(timeout=0.3))
