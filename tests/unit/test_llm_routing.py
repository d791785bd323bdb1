"""Several providers behind one client: each call reaches its model's provider,
the stream is that provider's own, and closing closes each provider once.
Then the bootstrap's wiring of it from an ``LlmConfig``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from adapters.bootstrap import LlmConfig, LlmModel, llm_client
from adapters.llm import EchoLlmClient, OpenAiCompatibleLlmClient, RoutingLlmClient
from gemini_core.entities import MessageRole
from gemini_core.llm import ChatTurn, LlmChunk, LlmRequest, Usage


class Provider:
    """A client that answers with its own name and remembers what it was asked."""

    def __init__(self, name: str, *, fails_to_close: bool = False) -> None:
        self.name = name
        self.models: list[str] = []
        self.finished = 0
        self.closed = 0
        self._fails_to_close = fails_to_close

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        self.models.append(request.model)
        try:
            yield LlmChunk(f"{self.name} ")
            yield LlmChunk(f"answers {request.model}")
            yield Usage(prompt_tokens=1, completion_tokens=2)
        finally:
            self.finished += 1

    async def aclose(self) -> None:
        self.closed += 1
        if self._fails_to_close:
            raise RuntimeError(f"{self.name} failed to close")


def request(model: str) -> LlmRequest:
    return LlmRequest(
        model=model,
        system_prompt=None,
        turns=(ChatTurn(role=MessageRole.USER, text="Hi"),),
        timeout_seconds=5,
    )


async def answer(client: RoutingLlmClient, model: str) -> str:
    async with aclosing(client.stream(request(model))) as stream:
        return "".join([item.text async for item in stream if isinstance(item, LlmChunk)])


async def test_each_call_goes_to_its_models_provider() -> None:
    gemini, local = Provider("gemini"), Provider("local")
    router = RoutingLlmClient(
        {"gemini-2.5-flash": gemini, "llama3.2": local, "qwen": local}, fallback=gemini
    )

    assert await answer(router, "llama3.2") == "local answers llama3.2"
    assert await answer(router, "gemini-2.5-flash") == "gemini answers gemini-2.5-flash"
    assert await answer(router, "qwen") == "local answers qwen"
    # A model no route names (the core sends only allowed ones) goes to the default.
    assert await answer(router, "unlisted") == "gemini answers unlisted"
    assert local.models == ["llama3.2", "qwen"]
    assert gemini.models == ["gemini-2.5-flash", "unlisted"]


async def test_nothing_is_sent_before_the_first_piece_and_closing_early_ends_the_call() -> None:
    local = Provider("local")
    router = RoutingLlmClient({"llama3.2": local}, fallback=Provider("echo"))

    stream = router.stream(request("llama3.2"))
    assert local.models == []  # the request leaves on the first __anext__, as the port says
    assert await anext(stream) == LlmChunk("local ")
    await stream.aclose()
    assert local.finished == 1
    assert local.models == ["llama3.2"]


async def test_closing_closes_every_provider_once_even_when_one_fails() -> None:
    gemini, local, echo = Provider("gemini"), Provider("local", fails_to_close=True), Provider("e")
    router = RoutingLlmClient({"a": local, "b": local, "c": echo}, fallback=gemini)

    with pytest.raises(RuntimeError, match="local failed to close"):
        await router.aclose()

    assert (gemini.closed, local.closed, echo.closed) == (1, 1, 1)


# --- the bootstrap's wiring --------------------------------------------------------


async def test_one_provider_needs_no_router() -> None:
    client = llm_client(LlmConfig(provider="echo", models=(LlmModel("echo", "echo"),)))
    try:
        assert isinstance(client, EchoLlmClient)
    finally:
        await client.aclose()


async def test_several_providers_get_one_client_each_behind_a_router() -> None:
    config = LlmConfig(
        provider="echo",
        models=(
            LlmModel("echo", "echo"),
            LlmModel("llama3.2", "openai"),
            LlmModel("qwen2.5:7b", "openai"),
        ),
        openai_base_url="http://127.0.0.1:9/v1",
        echo_piece_delay_seconds=0,
    )
    router = llm_client(config)
    try:
        assert isinstance(router, RoutingLlmClient)
        assert isinstance(router.client_for("echo"), EchoLlmClient)
        local = router.client_for("llama3.2")
        assert isinstance(local, OpenAiCompatibleLlmClient)
        assert router.client_for("qwen2.5:7b") is local  # built once, for both
        assert router.client_for("anything else") is router.client_for("echo")
        echoed = await answer(router, "echo")
        assert "offline echo model" in echoed
    finally:
        await router.aclose()
