"""``ChatService`` on the in-memory repositories, with a scripted model and the
offline one: what the model is shown, how every ending of an answer is
stored, titles, paging, limits and scoping."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from adapters.llm import EchoLlmClient
from adapters.memory import (
    FakeClock,
    InMemoryAnswerOwner,
    InMemoryAnswerSignals,
    InMemoryRepositories,
    InMemorySignalHub,
    RecordingTelemetry,
    memory_file_storage,
)
from gemini_core.answers import clean_title, first_words
from gemini_core.chats import (
    AnswerDelta,
    AnswerDone,
    AnswerEvent,
    AnswerFailed,
    AnswerStopped,
    ChatRules,
    ChatService,
    StoredImages,
)
from gemini_core.entities import (
    ChatChanges,
    FileUpload,
    Message,
    MessageRole,
    MessageStatus,
    NewFileUpload,
    NewMessage,
    NewUser,
)
from gemini_core.errors import (
    AnswerInProgressError,
    GeminiError,
    InvalidInputError,
    NotFoundError,
    TooManyAnswersError,
    UnavailableError,
    UpstreamError,
    UpstreamQuotaError,
    UpstreamTimeoutError,
)
from gemini_core.llm import LlmChunk, LlmRequest, Usage

# --- a model that does as it is told -------------------------------------------------


@dataclass
class Script:
    pieces: tuple[str, ...] = ("Hello", " there")
    usage: Usage | None = field(default_factory=lambda: Usage(12, 3))
    error: GeminiError | None = None
    fail_after: int = 0
    """Pieces sent before ``error`` is raised."""
    hang: bool = False
    """After the pieces, wait forever (until cancelled or closed)."""
    gate: asyncio.Event | None = None
    """After the first piece, wait for this before the rest."""


class ScriptedLlm:
    def __init__(self) -> None:
        self.requests: list[LlmRequest] = []
        self.scripts: deque[Script] = deque()
        self.finished = 0
        """Calls whose stream was left, however (completed, failed, closed, cancelled)."""
        self.closed = False
        self.hanging = asyncio.Event()

    def will(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        self.requests.append(request)
        script = self.scripts.popleft() if self.scripts else Script()
        try:
            for n, piece in enumerate(script.pieces):
                if script.error is not None and n == script.fail_after:
                    raise script.error
                await asyncio.sleep(0)
                yield LlmChunk(piece)
                if n == 0 and script.gate is not None:
                    await script.gate.wait()
            if script.error is not None:
                raise script.error
            if script.hang:
                self.hanging.set()
                await asyncio.Event().wait()
            if script.usage is not None:
                yield script.usage
        finally:
            self.finished += 1

    async def aclose(self) -> None:
        self.closed = True


class FakeImages:
    def __init__(self) -> None:
        self.read_ids: list[int] = []
        self.missing: set[int] = set()

    async def read(self, upload: FileUpload) -> bytes:
        self.read_ids.append(upload.id)
        if upload.id in self.missing:
            raise UnavailableError("The store is down.")
        return f"bytes of {upload.filename}".encode()


async def active_branch(repos: InMemoryRepositories, user_id: int, chat_id: int) -> list[Message]:
    chat = await repos.chats.get(user_id, chat_id)
    if chat is None or chat.current_message_id is None:
        return []
    return await repos.messages.branch(
        user_id, chat_id, ending_at=chat.current_message_id, limit=1000
    )


@dataclass
class World:
    service: ChatService
    repos: InMemoryRepositories
    llm: ScriptedLlm
    images: FakeImages
    telemetry: RecordingTelemetry
    ann: int
    bob: int

    async def chat(self, user_id: int | None = None, **fields: str) -> int:
        chat = await self.service.create_chat(user_id or self.ann, **fields)  # type: ignore[arg-type]
        return chat.id

    async def stored(self, chat_id: int, user_id: int | None = None) -> list[Message]:
        """The chat's active branch as stored, oldest first."""
        return await active_branch(self.repos, user_id or self.ann, chat_id)

    async def upload(self, user_id: int, name: str, size: int = 100) -> int:
        upload = await self.repos.files.add(
            NewFileUpload(
                user_id=user_id,
                filename=name,
                original_filename=name,
                content_type="image/png",
                file_size=size,
            )
        )
        return upload.id


def build(
    llm: object,
    images: FakeImages | None = None,
    telemetry: RecordingTelemetry | None = None,
    *,
    repos: InMemoryRepositories | None = None,
    hub: InMemorySignalHub | None = None,
    **rules: object,
) -> tuple[ChatService, InMemoryRepositories]:
    """A service over in-memory adapters; pass the ``repos`` and ``hub`` of another
    for a second process of the same deployment."""
    repos = repos or InMemoryRepositories(clock=FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))
    settings: dict[str, object] = {"models": ("model-a", "model-b")}
    settings.update(rules)
    service = ChatService(
        chats=repos.chats,
        messages=repos.messages,
        files=repos.files,
        images=images or FakeImages(),
        llm=llm,  # type: ignore[arg-type]
        rules=ChatRules(**settings),  # type: ignore[arg-type]
        telemetry=telemetry or RecordingTelemetry(),
        owner=InMemoryAnswerOwner(repos.store),
        signals=InMemoryAnswerSignals(hub or InMemorySignalHub()),
    )
    return service, repos


async def make_world(**rules: object) -> World:
    llm, images, telemetry = ScriptedLlm(), FakeImages(), RecordingTelemetry()
    service, repos = build(llm, images, telemetry, **rules)
    ann = await repos.users.add(NewUser(email="ann@example.com", username="ann", password_hash="h"))
    bob = await repos.users.add(NewUser(email="bob@example.com", username="bob", password_hash="h"))
    return World(service, repos, llm, images, telemetry, ann.id, bob.id)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """Titles from the first words, so every model call is an answer."""
    made = await make_world(max_history_messages=5, model_titles=False)
    yield made
    await made.service.aclose()


@pytest.fixture
async def titling() -> AsyncIterator[World]:
    """Titles asked of the model."""
    made = await make_world(model_titles=True)
    yield made
    await made.service.aclose()


async def answer(world: World, chat_id: int, content: str = "Hi", **kw: object) -> Message:
    exchange = await world.service.send_message(world.ann, chat_id, content, **kw)  # type: ignore[arg-type]
    return await exchange.complete()


def text_of(events: list[AnswerEvent], start: int = 0) -> str:
    """The deltas put together, checking each one's offset (counted from the
    answer's start, ``start`` characters before the first delta) on the way."""
    text = ""
    for event in events:
        if isinstance(event, AnswerDelta):
            text += event.text
            assert event.offset == start + len(text)
    return text


# --- sending and answering ---------------------------------------------------------


async def test_a_message_and_its_answer_are_stored_with_model_and_tokens(world: World) -> None:
    chat_id = await world.chat(system_prompt="Be brief.")
    exchange = await world.service.send_message(world.ann, chat_id, "What is 2+2?")
    assert exchange.user_message.content == "What is 2+2?"
    assert (exchange.answer.status, exchange.answer.content) == (MessageStatus.STREAMING, "")
    assert exchange.answer.parent_id == exchange.user_message.id
    assert await world.stored(chat_id) == [exchange.user_message, exchange.answer], (
        "both stored before the model answers"
    )
    events = [event async for event in exchange.events]
    assert text_of(events) == "Hello there"
    assert isinstance(events[-1], AnswerDone)
    stored = events[-1].message
    assert (stored.role, stored.content, stored.status) == (
        MessageRole.ASSISTANT,
        "Hello there",
        MessageStatus.COMPLETE,
    )
    assert (stored.model, stored.prompt_tokens, stored.completion_tokens) == ("model-a", 12, 3)
    assert await world.stored(chat_id) == [exchange.user_message, stored]
    request = world.llm.requests[0]
    assert (request.model, request.system_prompt) == ("model-a", "Be brief.")
    assert [(t.role, t.text) for t in request.turns] == [(MessageRole.USER, "What is 2+2?")]


async def test_the_model_sees_the_recent_history_without_failed_answers(world: World) -> None:
    chat_id = await world.chat()
    for n in range(3):
        await answer(world, chat_id, f"question {n}")
    world.llm.will(Script(pieces=("broken",), error=UpstreamError("x"), fail_after=1))
    with pytest.raises(UpstreamError):
        await answer(world, chat_id, "question 3")
    await answer(world, chat_id, "question 4")
    turns = world.llm.requests[-1].turns
    # Five messages at most, the new one included; the failed answer is left
    # out, and the window starts with the user.
    assert [(t.role.value, t.text) for t in turns] == [
        ("user", "question 2"),
        ("assistant", "Hello there"),
        ("user", "question 3"),
        ("user", "question 4"),
    ]


async def test_images_reach_the_model_only_the_callers_and_history_ones_too(world: World) -> None:
    chat_id = await world.chat()
    first = await world.upload(world.ann, "a.png")
    second = await world.upload(world.ann, "b.png")
    await answer(world, chat_id, "Look", file_ids=[first])
    await answer(world, chat_id, "And this", file_ids=[second, second])
    turns = world.llm.requests[-1].turns
    assert [t.text for t in turns] == ["Look", "Hello there", "And this"]
    assert [image.data for image in turns[0].images] == [b"bytes of a.png"]
    assert [(i.mime_type, i.data) for i in turns[2].images] == [("image/png", b"bytes of b.png")]
    assert (await world.stored(chat_id))[-2].file_ids == (second,)

    theirs = await world.upload(world.bob, "c.png")
    before = await world.stored(chat_id)
    for file_ids in ([theirs], [first, theirs], [999]):
        with pytest.raises(NotFoundError):
            await world.service.send_message(world.ann, chat_id, "Mine?", file_ids)
    assert await world.stored(chat_id) == before, "nothing is stored for a refused message"


async def test_an_unreadable_earlier_image_is_skipped_but_a_new_one_fails(world: World) -> None:
    chat_id = await world.chat()
    old = await world.upload(world.ann, "old.png")
    await answer(world, chat_id, "Look", file_ids=[old])
    world.images.missing.add(old)
    await answer(world, chat_id, "Still there?")
    assert world.llm.requests[-1].turns[0].images == ()
    new = await world.upload(world.ann, "new.png")
    world.images.missing.add(new)
    with pytest.raises(UnavailableError):
        await answer(world, chat_id, "And now", file_ids=[new])
    assert (await world.stored(chat_id))[-1].status is MessageStatus.FAILED


async def test_earlier_images_stop_at_the_budget(world: World) -> None:
    chat_id = await world.chat()
    big = await world.upload(world.ann, "big.png", size=15 * 1024 * 1024)
    small = await world.upload(world.ann, "small.png", size=2 * 1024 * 1024)
    await answer(world, chat_id, "Big", file_ids=[big])
    await answer(world, chat_id, "Small", file_ids=[small])
    world.images.read_ids.clear()
    await answer(world, chat_id, "Both?")
    assert world.images.read_ids == [small], "the newest first, while they fit 16 MiB"


@pytest.mark.parametrize(
    "error", [UpstreamError("boom"), UpstreamQuotaError("slow down"), UpstreamTimeoutError("late")]
)
async def test_a_failure_before_the_answer_keeps_the_question(
    world: World, error: UpstreamError
) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(error=error))
    exchange = await world.service.send_message(world.ann, chat_id, "Hello?")
    with pytest.raises(type(error)):
        await exchange.complete()
    question, failed = await world.stored(chat_id)
    assert question == exchange.user_message
    assert (failed.role, failed.status, failed.content, failed.model) == (
        MessageRole.ASSISTANT,
        MessageStatus.FAILED,
        "",
        "model-a",
    )


async def test_a_failure_mid_answer_stores_what_arrived_as_failed(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(
        Script(pieces=("Part", " one", " two"), error=UpstreamError("cut"), fail_after=2)
    )
    exchange = await world.service.send_message(world.ann, chat_id, "Tell me")
    events = [event async for event in exchange.events]
    assert text_of(events) == "Part one"
    assert isinstance(events[-1], AnswerFailed)
    assert isinstance(events[-1].error, UpstreamError)
    failed = (await world.stored(chat_id))[-1]
    assert events[-1].message == failed
    assert (failed.status, failed.content) == (MessageStatus.FAILED, "Part one")


async def test_an_empty_answer_is_a_failure(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("", "  ")))
    with pytest.raises(UpstreamError, match="empty"):
        await answer(world, chat_id)
    assert (await world.stored(chat_id))[-1].status is MessageStatus.FAILED


async def test_an_unexpected_error_is_stored_failed_and_reported_generically(
    world: World,
) -> None:
    class Broken(ScriptedLlm):
        async def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
            yield LlmChunk("Half")
            raise KeyError("internal detail")

    service, repos = build(Broken())
    user = await repos.users.add(NewUser(email="c@example.com", username="cid", password_hash="h"))
    chat = await service.create_chat(user.id)
    exchange = await service.send_message(user.id, chat.id, "Hi")
    with pytest.raises(GeminiError) as caught:
        await exchange.complete()
    assert "internal detail" not in caught.value.detail
    stored = await active_branch(repos, user.id, chat.id)
    assert (stored[-1].status, stored[-1].content) == (MessageStatus.FAILED, "Half")


async def test_a_reader_leaving_changes_nothing_the_answer_completes(world: World) -> None:
    chat_id = await world.chat()
    gate = asyncio.Event()
    world.llm.will(Script(pieces=("Par", "tial", " answer"), gate=gate))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    assert await anext(exchange.events) == AnswerDelta("Par", 3)
    await exchange.events.aclose()  # type: ignore[attr-defined]  (the client went away)
    gate.set()
    await world.service.settle()
    stored = (await world.stored(chat_id))[-1]
    assert (stored.status, stored.content) == (MessageStatus.COMPLETE, "Partial answer")
    assert stored.owner is None


async def test_an_answer_nobody_reads_is_written_and_stored(world: World) -> None:
    chat_id = await world.chat()
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    await world.service.settle()
    stored = await world.stored(chat_id)
    assert [m.status for m in stored] == [MessageStatus.COMPLETE] * 2
    assert stored[-1].id == exchange.answer.id
    assert world.llm.finished == 1


async def test_one_answer_at_a_time_per_chat(world: World) -> None:
    """Of twenty sends at once in one chat, one is answered; the others are refused
    (409) and store nothing. Another chat is not held up."""
    chat_id, other = await world.chat(), await world.chat()
    gate = asyncio.Event()
    world.llm.will(Script(gate=gate))
    results = await asyncio.gather(
        *(world.service.send_message(world.ann, chat_id, f"n{n}") for n in range(20)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert len(accepted) == 1
    assert all(isinstance(r, AnswerInProgressError) for r in results if r not in accepted)
    gate.set()
    answered = await accepted[0].complete()
    stored = await world.stored(chat_id)
    assert [m.role for m in stored] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert stored[1] == answered
    chat, _ = await world.service.get_chat(world.ann, chat_id)
    assert (chat.message_count, chat.current_message_id) == (2, answered.id)
    # Once the answer is stored, the chat takes the next question.
    assert (await answer(world, chat_id, "next")).parent_id is not None
    assert (await answer(world, other, "elsewhere")).role is MessageRole.ASSISTANT


async def test_a_chat_whose_model_is_gone_answers_with_the_default(world: World) -> None:
    chat = await world.repos.chats.update(
        world.ann, await world.chat(model="model-b"), ChatChanges(model="retired")
    )
    assert chat is not None
    answered = await answer(world, chat.id)
    assert answered.model == "model-a"
    assert world.llm.requests[-1].model == "model-a"


async def test_every_call_is_reported_to_the_telemetry(world: World) -> None:
    chat_id = await world.chat(title="Titled")
    world.llm.will(Script(), Script(error=UpstreamQuotaError("no")))
    await answer(world, chat_id)
    with pytest.raises(UpstreamQuotaError):
        await answer(world, chat_id)
    ok, quota = world.telemetry.model_calls()
    assert (ok.purpose, ok.outcome, quota.outcome) == ("answer", "ok", "quota")
    assert (ok.model, ok.prompt_tokens, ok.completion_tokens) == ("model-a", 12, 3)
    assert (ok.chat_id, ok.user_id) == (chat_id, world.ann)
    assert ok.first_token_seconds is not None
    assert ok.duration_seconds >= ok.first_token_seconds
    assert ok.pieces > 0
    assert quota.first_token_seconds is None


# --- titles ---------------------------------------------------------------------------


async def test_an_untitled_chat_is_titled_by_the_model_after_the_answer(titling: World) -> None:
    chat_id = await titling.chat()
    titling.llm.will(Script(), Script(pieces=('"Greetings', ' exchanged."')))
    await answer(titling, chat_id, "Hello, my friend")
    await titling.service.settle()
    chat, _ = await titling.service.get_chat(titling.ann, chat_id)
    assert chat.title == "Greetings exchanged"
    title_request = titling.llm.requests[1]
    assert "Hello, my friend" in title_request.turns[0].text
    assert "Hello there" in title_request.turns[0].text
    await answer(titling, chat_id, "Again")
    await titling.service.settle()
    assert len(titling.llm.requests) == 3, "a titled chat asks for no title"


async def test_titles_come_from_the_default_model_whatever_the_chat_uses(
    titling: World,
) -> None:
    chat_id = await titling.chat(model="model-b")
    titling.llm.will(Script(), Script(pieces=("A title",)))
    await answer(titling, chat_id, "Hello")
    await titling.service.settle()
    assert [r.model for r in titling.llm.requests] == ["model-b", "model-a"]


async def test_a_failed_title_call_falls_back_to_the_first_words(titling: World) -> None:
    chat_id = await titling.chat()
    titling.llm.will(Script(), Script(error=UpstreamError("no")))
    await answer(titling, chat_id, "Plan a trip to Rome in the spring with friends")
    await titling.service.settle()
    chat, _ = await titling.service.get_chat(titling.ann, chat_id)
    assert chat.title == "Plan a trip to Rome in…"


async def test_a_chat_renamed_meanwhile_keeps_its_name(titling: World) -> None:
    chat_id = await titling.chat()
    exchange = await titling.service.send_message(titling.ann, chat_id, "Hello")
    async for event in exchange.events:
        if isinstance(event, AnswerDone):
            await titling.service.update_chat(titling.ann, chat_id, ChatChanges(title="Mine"))
    await titling.service.settle()
    chat, _ = await titling.service.get_chat(titling.ann, chat_id)
    assert chat.title == "Mine"


async def test_the_offline_model_titles_with_the_first_words() -> None:
    service, repos = build(EchoLlmClient(), model_titles=False, models=("echo",))
    user = await repos.users.add(NewUser(email="d@example.com", username="dee", password_hash="h"))
    chat = await service.create_chat(user.id)
    answered = await (await service.send_message(user.id, chat.id, "  Hi   there!  ")).complete()
    assert "offline" in answered.content
    await service.settle()
    titled, _ = await service.get_chat(user.id, chat.id)
    assert titled.title == "Hi there!"
    await service.aclose()


def test_titles_are_cleaned() -> None:
    assert first_words("one two three four five six seven") == "one two three four five six…"
    assert first_words("x" * 200).endswith("…")
    assert len(first_words("x" * 200)) == 80
    assert first_words("   ") == "New chat"
    assert clean_title('Title: "Rome in spring."\nsecond line') == "Rome in spring"
    assert clean_title("**Bold**") == "Bold"
    assert clean_title("") == ""


# --- chats: create, list, get, change, delete ------------------------------------------


async def test_chats_are_created_with_the_default_model_and_checked(world: World) -> None:
    chat = await world.service.create_chat(world.ann, title="  My   plans ")
    assert (chat.title, chat.model, chat.system_prompt) == ("My plans", "model-a", None)
    assert (await world.service.create_chat(world.ann, model="model-b")).model == "model-b"
    cases = [
        ({"model": "gpt-9"}, "model"),
        ({"title": "x" * 201}, "title"),
        ({"system_prompt": "x" * 8001}, "system_prompt"),
    ]
    for fields, name in cases:
        with pytest.raises(InvalidInputError) as caught:
            await world.service.create_chat(world.ann, **fields)  # type: ignore[arg-type]
        assert caught.value.field == name
    assert (await world.service.create_chat(world.ann, title="x" * 200)).title == "x" * 200


async def test_message_limits(world: World) -> None:
    chat_id = await world.chat()
    for content in ("", "   \n", "x" * 32001):
        with pytest.raises(InvalidInputError) as caught:
            await world.service.send_message(world.ann, chat_id, content)
        assert caught.value.field == "content"
    with pytest.raises(InvalidInputError) as caught:
        await world.service.send_message(world.ann, chat_id, "hi", list(range(1, 12)))
    assert caught.value.field == "file_ids"
    assert await world.stored(chat_id) == []
    assert (await answer(world, chat_id, "x" * 32000)).status is MessageStatus.COMPLETE


async def test_chats_list_pinned_first_then_recent_with_cursor_and_filters(world: World) -> None:
    ids = [await world.chat(title=f"chat {n}") for n in range(7)]
    await world.service.update_chat(world.ann, ids[2], ChatChanges(pinned=True))
    await world.service.update_chat(world.ann, ids[5], ChatChanges(archived=True))
    await world.chat(world.bob, title="bob's")
    seen: list[int] = []
    cursor = None
    while True:
        page = await world.service.list_chats(world.ann, limit=2, cursor=cursor)
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    # The in-memory clock stands still: equal times fall back to the id.
    assert seen == [ids[2], ids[6], ids[4], ids[3], ids[1], ids[0]]
    archived = await world.service.list_chats(world.ann, archived=True)
    assert [c.id for c in archived.items] == [ids[5]]
    assert archived.next_cursor is None
    found = await world.service.list_chats(world.ann, query=" CHAT 3 ")
    assert [c.id for c in found.items] == [ids[3]]
    for bad in (0, 101):
        with pytest.raises(InvalidInputError):
            await world.service.list_chats(world.ann, limit=bad)
    with pytest.raises(InvalidInputError) as caught:
        await world.service.list_chats(world.ann, cursor="not-a-cursor")
    assert caught.value.field == "cursor"


async def test_changes_are_checked_and_blank_clears(world: World) -> None:
    chat_id = await world.chat(title="Old", system_prompt="Be kind.")
    chat = await world.service.update_chat(
        world.ann, chat_id, ChatChanges(title="  ", system_prompt="")
    )
    assert (chat.title, chat.system_prompt) == (None, None)
    chat = await world.service.update_chat(world.ann, chat_id, ChatChanges(model="model-b"))
    assert chat.model == "model-b"
    with pytest.raises(InvalidInputError):
        await world.service.update_chat(world.ann, chat_id, ChatChanges(model="nope"))
    unchanged = await world.service.update_chat(world.ann, chat_id, ChatChanges())
    assert unchanged == chat


async def test_another_users_chat_is_not_found_everywhere(world: World) -> None:
    chat_id = await world.chat(world.bob, title="bob's")
    attempts = [
        world.service.get_chat(world.ann, chat_id),
        world.service.update_chat(world.ann, chat_id, ChatChanges(title="mine")),
        world.service.delete_chat(world.ann, chat_id),
        world.service.list_messages(world.ann, chat_id),
        world.service.send_message(world.ann, chat_id, "hi"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            await attempt
    chat, _ = await world.service.get_chat(world.bob, chat_id)
    assert (chat.title, chat.message_count) == ("bob's", 0)


async def test_deleting_a_chat_deletes_its_messages(world: World) -> None:
    chat_id = await world.chat()
    await answer(world, chat_id)
    await world.service.delete_chat(world.ann, chat_id)
    with pytest.raises(NotFoundError):
        await world.service.get_chat(world.ann, chat_id)
    assert world.repos.store.messages == {}


async def test_messages_page_backwards_without_gaps_or_repeats(world: World) -> None:
    chat_id = await world.chat()
    parent = None
    for n in range(11):
        added = await world.repos.messages.add(
            NewMessage(
                chat_id=chat_id,
                user_id=world.ann,
                role=MessageRole.USER,
                content=str(n),
                parent_id=parent,
            )
        )
        parent = added.id
    pages: list[list[str]] = []
    before = None
    while True:
        page = await world.service.list_messages(world.ann, chat_id, limit=4, before=before)
        pages.append([m.content for m in page.items])
        if page.next_cursor is None:
            break
        assert page.next_cursor == str(page.items[0].id)
        before = int(page.next_cursor)
    assert pages == [["7", "8", "9", "10"], ["3", "4", "5", "6"], ["0", "1", "2"]]
    exact = await world.service.list_messages(world.ann, chat_id, limit=11)
    assert (len(exact.items), exact.next_cursor) == (11, None)
    _, newest = await world.service.get_chat(world.ann, chat_id)
    assert [m.content for m in newest] == [str(n) for n in range(11)]


async def test_search_is_the_callers_and_needs_words(world: World) -> None:
    mine = await world.chat(title="Travel")
    theirs = await world.chat(world.bob)
    await answer(world, mine, "Pack for Rome")
    await (await world.service.send_message(world.bob, theirs, "Rome again")).complete()
    hits = await world.service.search_messages(world.ann, "rome")
    assert [(h.message.content, h.chat_title) for h in hits] == [("Pack for Rome", "Travel")]
    assert "**Rome**" in hits[0].snippet
    for query in ("", "   ", "x" * 501):
        with pytest.raises(InvalidInputError) as caught:
            await world.service.search_messages(world.ann, query)
        assert caught.value.field == "q"


async def test_closing_the_service_waits_for_work_and_closes_the_model(titling: World) -> None:
    chat_id = await titling.chat()
    await answer(titling, chat_id)  # leaves a title being written
    await titling.service.aclose()
    assert titling.llm.closed
    chat, _ = await titling.service.get_chat(titling.ann, chat_id)
    assert chat.title is not None


async def test_abandoning_ends_an_answer_waiting_on_the_model_stored_failed(
    world: World,
) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("So", " far"), hang=True))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    seen: list[str] = []
    ended: list[AnswerEvent] = []

    async def read() -> None:
        async for event in exchange.events:
            if isinstance(event, AnswerDelta):
                seen.append(event.text)
            else:
                ended.append(event)

    reader = asyncio.create_task(read())
    await asyncio.wait_for(world.llm.hanging.wait(), 5)
    world.service.abandon_answers()
    await reader
    assert isinstance(ended[0], AnswerFailed)
    assert isinstance(ended[0].error, UnavailableError)
    assert "shutting down" in ended[0].error.detail
    assert world.llm.finished == 1, "the model call was left at once"
    assert "".join(seen) == "So far"
    stored = await world.stored(chat_id)
    assert (stored[-1].status, stored[-1].content) == (MessageStatus.FAILED, "So far")
    assert len(stored) == 2, "stored once"


async def test_abandoning_ends_an_answer_between_pieces_at_its_next_one(world: World) -> None:
    chat_id = await world.chat()
    gate = asyncio.Event()
    world.llm.will(Script(pieces=("Par", "tial", " more"), gate=gate))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    assert await anext(exchange.events) == AnswerDelta("Par", 3)
    world.service.abandon_answers()  # while the model holds back the rest
    gate.set()
    with pytest.raises(UnavailableError):
        await exchange.complete()
    stored = await world.stored(chat_id)
    assert (stored[-1].status, stored[-1].content) == (MessageStatus.FAILED, "Par")


async def test_once_answers_are_abandoned_new_messages_are_refused(world: World) -> None:
    chat_id = await world.chat()
    world.service.abandon_answers()
    with pytest.raises(UnavailableError):
        await world.service.send_message(world.ann, chat_id, "Anyone?")
    assert await world.stored(chat_id) == []
    assert world.llm.requests == []


# --- images from file storage -----------------------------------------------------------


async def test_stored_images_reads_an_uploads_bytes_from_storage() -> None:
    storage = memory_file_storage()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"\x89PNG"
        yield b" and the rest"

    await storage.put("abc.png", chunks(), content_type="image/png")
    upload = FileUpload(
        id=1,
        user_id=1,
        filename="abc.png",
        original_filename="cat.png",
        content_type="image/png",
        file_size=17,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert await StoredImages(storage, max_bytes=100).read(upload) == b"\x89PNG and the rest"
    with pytest.raises(NotFoundError):
        await StoredImages(storage, max_bytes=10).read(upload)
    with pytest.raises(NotFoundError):
        await StoredImages(storage, max_bytes=100).read(replace(upload, filename="gone.png"))


# --- the message tree ---------------------------------------------------------------


async def test_editing_a_question_starts_a_branch_the_model_sees_alone(world: World) -> None:
    chat_id = await world.chat()
    a1 = await answer(world, chat_id, "one")
    a2 = await answer(world, chat_id, "two")
    a3 = await answer(world, chat_id, "three")
    q2 = await world.repos.messages.get(world.ann, chat_id, a2.parent_id or 0)
    assert q2 is not None
    assert q2.parent_id == a1.id

    edited = await answer(world, chat_id, "two, better", parent_id=a1.id)
    sent = [turn.text for turn in world.llm.requests[-1].turns]
    assert sent == ["one", a1.content, "two, better"]  # not "two", not "three"
    chat, shown = await world.service.get_chat(world.ann, chat_id)
    assert chat.current_message_id == edited.id
    assert [m.content for m in shown][:3] == ["one", a1.content, "two, better"]
    assert shown[2].siblings == (q2.id, shown[2].id)
    # The old branch stays reachable: switch back to it by the old question.
    chat, shown = await world.service.select_branch(world.ann, chat_id, q2.id)
    assert chat.current_message_id == a3.id
    assert [m.content for m in shown][-2:] == ["three", a3.content]


async def test_regenerating_makes_sibling_answers_to_switch_between(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("first",)), Script(pieces=("second",)), Script(pieces=("third",)))
    first = await answer(world, chat_id, "Hi")
    second = await (await world.service.regenerate(world.ann, chat_id, first.id)).complete()
    assert second.parent_id == first.parent_id
    question = first.parent_id or 0
    third = await (
        await world.service.regenerate(world.ann, chat_id, question, model="model-b")
    ).complete()
    assert (third.model, third.siblings) == ("model-b", (first.id, second.id, third.id))
    assert [r.turns[-1].text for r in world.llm.requests] == ["Hi", "Hi", "Hi"]
    for answer_id, text in ((first.id, "first"), (second.id, "second"), (third.id, "third")):
        chat, shown = await world.service.select_branch(world.ann, chat_id, answer_id)
        assert chat.current_message_id == answer_id
        assert shown[-1].content == text
    page = await world.service.list_messages(world.ann, chat_id)
    assert [m.id for m in page.items] == [question, third.id]


async def test_a_parent_or_message_not_in_the_chat_is_404_and_stores_nothing(
    world: World,
) -> None:
    mine, other = await world.chat(), await world.chat()
    theirs = await world.chat(world.bob)
    elsewhere = await answer(world, other, "elsewhere")
    for parent in (elsewhere.id, 10_000):
        with pytest.raises(NotFoundError):
            await world.service.send_message(world.ann, mine, "x", parent_id=parent)
    for message_id in (elsewhere.id, 10_000):
        with pytest.raises(NotFoundError):
            await world.service.regenerate(world.ann, mine, message_id)
        with pytest.raises(NotFoundError):
            await world.service.select_branch(world.ann, mine, message_id)
    with pytest.raises(NotFoundError):
        await world.service.select_branch(world.bob, other, elsewhere.id)
    with pytest.raises(NotFoundError):
        await world.service.regenerate(world.bob, theirs, elsewhere.id)
    chat, shown = await world.service.get_chat(world.ann, mine)
    assert (chat.message_count, shown) == (0, [])
    # The chat is free again after the refusals.
    assert (await answer(world, mine, "now")).role is MessageRole.ASSISTANT


async def test_no_regenerate_or_send_while_an_answer_is_written(world: World) -> None:
    chat_id = await world.chat()
    first = await answer(world, chat_id, "Hi")
    world.llm.will(Script(hang=True))
    running = await world.service.send_message(world.ann, chat_id, "Tell me more")
    await world.llm.hanging.wait()
    before = await world.stored(chat_id)
    with pytest.raises(AnswerInProgressError):
        await world.service.regenerate(world.ann, chat_id, first.id)
    with pytest.raises(AnswerInProgressError):
        await world.service.send_message(world.ann, chat_id, "and?")
    assert await world.stored(chat_id) == before, "refusals store nothing"
    # A reader leaving does not free the chat; stopping the answer does.
    await running.events.aclose()  # type: ignore[attr-defined]
    with pytest.raises(AnswerInProgressError):
        await world.service.send_message(world.ann, chat_id, "and?")
    assert await world.service.stop(world.ann, chat_id) == [running.answer.id]
    assert (await answer(world, chat_id, "and now")).role is MessageRole.ASSISTANT


async def test_an_unknown_model_for_one_answer_is_refused_before_anything_is_stored(
    world: World,
) -> None:
    chat_id = await world.chat()
    with pytest.raises(InvalidInputError) as refused:
        await world.service.send_message(world.ann, chat_id, "Hi", model="gpt-9")
    assert refused.value.field == "model"
    once = await answer(world, chat_id, "Hi", model="model-b")
    assert once.model == "model-b"
    chat, _ = await world.service.get_chat(world.ann, chat_id)
    assert (chat.model, chat.message_count) == ("model-a", 2)


# --- answers the server owns: stop, follow, other processes -------------------------------


async def second_process(world: World, hub: InMemorySignalHub) -> tuple[ChatService, ScriptedLlm]:
    """Another process of ``world``'s deployment: the same store, the same signals."""
    llm = ScriptedLlm()
    service, _ = build(llm, repos=world.repos, hub=hub, max_history_messages=5, model_titles=False)
    await service.start()
    return service, llm


@pytest.fixture
async def pair() -> AsyncIterator[tuple[World, ChatService, ScriptedLlm]]:
    """Two processes: ``world`` (the first) and another on the same store and signals."""
    hub = InMemorySignalHub()
    llm, images, telemetry = ScriptedLlm(), FakeImages(), RecordingTelemetry()
    service, repos = build(
        llm, images, telemetry, hub=hub, max_history_messages=5, model_titles=False
    )
    ann = await repos.users.add(NewUser(email="ann@example.com", username="ann", password_hash="h"))
    bob = await repos.users.add(NewUser(email="bob@example.com", username="bob", password_hash="h"))
    world = World(service, repos, llm, images, telemetry, ann.id, bob.id)
    await service.start()
    other, other_llm = await second_process(world, hub)
    yield world, other, other_llm
    await other.aclose()
    await service.aclose()


async def test_stop_stores_the_text_so_far_as_stopped(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("Half", " way"), hang=True))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    await world.llm.hanging.wait()
    assert await world.service.stop(world.ann, chat_id) == [exchange.answer.id]
    stored = (await world.stored(chat_id))[-1]
    assert (stored.status, stored.content, stored.owner) == (
        MessageStatus.STOPPED,
        "Half way",
        None,
    ), "stored by the time stop returns"
    events = [event async for event in exchange.events]
    assert text_of(events) == "Half way"
    assert events[-1] == AnswerStopped(stored)
    assert world.llm.finished == 1, "the model call was left"
    assert await world.service.stop(world.ann, chat_id) == [], "nothing left to stop"
    with pytest.raises(NotFoundError):
        await world.service.stop(world.bob, chat_id)
    # A stopped answer is history the model sees, as far as it went.
    await answer(world, chat_id, "Go on")
    assert [t.text for t in world.llm.requests[-1].turns] == ["Go", "Half way", "Go on"]


async def test_a_stop_from_another_process_stops_the_answer_where_it_is_written(
    pair: tuple[World, ChatService, ScriptedLlm],
) -> None:
    world, other, _ = pair
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("Some", " text"), hang=True))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    await world.llm.hanging.wait()
    follower_message, following = await other.follow(world.ann, chat_id, exchange.answer.id)
    assert follower_message.status is MessageStatus.STREAMING
    assert await other.stop(world.ann, chat_id) == [exchange.answer.id]
    writer_events = [event async for event in exchange.events]
    follower_events = [event async for event in following]
    stored = (await world.stored(chat_id))[-1]
    assert (stored.status, stored.content) == (MessageStatus.STOPPED, "Some text")
    for events in (writer_events, follower_events):
        assert text_of(events) == "Some text"
        assert events[-1] == AnswerStopped(stored)


async def test_following_an_answer_from_another_process_misses_and_repeats_nothing(
    pair: tuple[World, ChatService, ScriptedLlm],
) -> None:
    world, other, _ = pair
    chat_id = await world.chat()
    gate = asyncio.Event()
    world.llm.will(Script(pieces=("One", " two", " three", " four"), gate=gate))
    exchange = await world.service.send_message(world.ann, chat_id, "Count")
    assert await anext(exchange.events) == AnswerDelta("One", 3)
    # A reader elsewhere that had received two characters resumes there.
    _, following = await other.follow(world.ann, chat_id, exchange.answer.id, offset=2)
    first = await anext(following)
    assert first == AnswerDelta("e", 3)
    gate.set()
    rest = [event async for event in following]
    stored = await exchange.complete()
    assert "On" + text_of([first, *rest], start=2) == stored.content == "One two three four"
    assert rest[-1] == AnswerDone(stored)
    # Each delta's offset counts from the start of the answer.
    offsets = [e.offset for e in (first, *rest) if isinstance(e, AnswerDelta)]
    assert offsets[-1] == len(stored.content)


async def test_following_a_finished_answer_sends_the_rest_then_its_end(world: World) -> None:
    chat_id = await world.chat()
    stored = await answer(world, chat_id, "Hi")
    message, events = await world.service.follow(world.ann, chat_id, stored.id, offset=3)
    assert message == stored
    assert [event async for event in events] == [
        AnswerDelta("lo there", len("Hello there")),
        AnswerDone(stored),
    ]
    _, events = await world.service.follow(world.ann, chat_id, stored.id, offset=99)
    assert [event async for event in events] == [AnswerDone(stored)]
    with pytest.raises(NotFoundError):
        await world.service.follow(world.bob, chat_id, stored.id)
    with pytest.raises(NotFoundError):  # a question has no stream
        await world.service.follow(world.ann, chat_id, stored.parent_id or 0)
    with pytest.raises(InvalidInputError):
        await world.service.follow(world.ann, chat_id, stored.id, offset=-1)


async def test_an_answer_longer_than_its_time_fails_with_its_text() -> None:
    llm = ScriptedLlm()
    service, repos = build(llm, timeout_seconds=0.01)
    user = await repos.users.add(NewUser(email="t@example.com", username="t", password_hash="h"))
    chat = await service.create_chat(user.id)
    llm.will(Script(pieces=("Slow",), hang=True))
    exchange = await service.send_message(user.id, chat.id, "Hi")
    with pytest.raises(UpstreamTimeoutError):
        await exchange.complete()
    stored = await active_branch(repos, user.id, chat.id)
    assert (stored[-1].status, stored[-1].content) == (MessageStatus.FAILED, "Slow")
    await service.aclose()


async def test_a_user_may_have_only_so_many_answers_written_at_once() -> None:
    llm = ScriptedLlm()
    service, repos = build(llm, max_running_per_user=2)
    user = await repos.users.add(NewUser(email="u@example.com", username="u", password_hash="h"))
    chats = [(await service.create_chat(user.id)).id for _ in range(3)]
    llm.will(Script(hang=True), Script(hang=True))
    for chat_id in chats[:2]:
        await service.send_message(user.id, chat_id, "Go")
    with pytest.raises(TooManyAnswersError):
        await service.send_message(user.id, chats[2], "Go")
    assert await active_branch(repos, user.id, chats[2]) == []
    await service.stop(user.id, chats[0])
    await service.send_message(user.id, chats[2], "Go")
    service.abandon_answers()
    await service.aclose()


async def test_the_text_is_saved_while_it_grows() -> None:
    llm = ScriptedLlm()
    service, repos = build(llm, progress_seconds=0.01)
    saved: list[dict[int, str]] = []
    whole = asyncio.Event()
    save_progress = repos.messages.save_progress

    async def recording(texts: Mapping[int, str]) -> None:
        await save_progress(texts)
        saved.append(dict(texts))
        if "Written so far" in texts.values():
            whole.set()

    repos.messages.save_progress = recording  # type: ignore[method-assign]
    user = await repos.users.add(NewUser(email="p@example.com", username="p", password_hash="h"))
    chat = await service.create_chat(user.id)
    llm.will(Script(pieces=("Written", " so far"), hang=True))
    exchange = await service.send_message(user.id, chat.id, "Go")
    await asyncio.wait_for(whole.wait(), 5)
    stored = await repos.messages.get(user.id, chat.id, exchange.answer.id)
    assert stored is not None
    assert (stored.status, stored.content) == (MessageStatus.STREAMING, "Written so far")
    assert all(list(texts) == [exchange.answer.id] for texts in saved)
    service.abandon_answers()
    await service.aclose()


async def test_answers_of_a_process_that_died_are_failed_at_start(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=("Cut",), hang=True))
    exchange = await world.service.send_message(world.ann, chat_id, "Go")
    await world.llm.hanging.wait()
    # The writing process dies: its key is no longer held by anyone.
    world.repos.store.live_owners.clear()
    successor, _ = build(ScriptedLlm(), repos=world.repos)
    await successor.start()
    stored = await world.repos.messages.get(world.ann, chat_id, exchange.answer.id)
    assert stored is not None
    assert (stored.status, stored.owner) == (MessageStatus.FAILED, None)
    await successor.aclose()
    world.service.abandon_answers()


async def test_closing_stores_answers_still_running_as_failed() -> None:
    llm = ScriptedLlm()
    service, repos = build(llm, shutdown_grace_seconds=0.01)
    user = await repos.users.add(NewUser(email="c@example.com", username="c", password_hash="h"))
    chat = await service.create_chat(user.id)
    llm.will(Script(pieces=("Before the end",), hang=True))
    exchange = await service.send_message(user.id, chat.id, "Go")
    await llm.hanging.wait()
    await service.aclose()
    stored = await repos.messages.get(user.id, chat.id, exchange.answer.id)
    assert stored is not None
    assert (stored.status, stored.content) == (MessageStatus.FAILED, "Before the end")


async def test_a_slow_reader_slows_nothing_and_gets_what_it_missed_at_once(world: World) -> None:
    chat_id = await world.chat()
    world.llm.will(Script(pieces=tuple(f" {n}" for n in range(50))))
    exchange = await world.service.send_message(world.ann, chat_id, "Count")
    slow = exchange.events
    first = await anext(slow)  # then it reads nothing while the answer is written
    _, other = await world.service.follow(world.ann, chat_id, exchange.answer.id)
    fast = [event async for event in other]
    assert isinstance(fast[-1], AnswerDone), "the model and another reader went on"
    rest = [event async for event in slow]
    assert len(rest) == 2, "what it missed as one piece, then the end"
    assert (
        text_of([first, *rest]) == fast[-1].message.content == "".join(f" {n}" for n in range(50))
    )
