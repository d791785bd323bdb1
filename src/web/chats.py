"""``/chats`` and ``/search``: conversations with the model, and search over them.

Sending a message answers in one of two ways, chosen by ``Accept``:

- ``application/json`` (the default): 201 with both stored messages, once the
  answer has ended;
- ``text/event-stream``: 200 and Server-Sent Events, in this order:
  ``user_message``, ``assistant_message`` (the answer, stored ``streaming``),
  then ``delta`` for each piece of the answer the moment the model sends it
  (with an ``id:`` to resume after), then ``done`` with the stored answer,
  ``stopped``, or ``error`` with problem details.

The answer belongs to the server (see ``gemini_core.streams``): a client that
goes away leaves it running, and ``GET .../messages/{id}/stream`` picks it up
again on any worker.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import (
    FromPath,
    FromQuery,
    HeaderParameter,
    JSONBody,
    Parameter,
    QueryParameter,
)
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gemini_core.accounts import Principal
from gemini_core.chats import (
    CURRENT_LEAF,
    MAX_CONTENT_LENGTH,
    MAX_FILES_PER_MESSAGE,
    MAX_SEARCH_LENGTH,
    MAX_SYSTEM_PROMPT_LENGTH,
    MAX_TITLE_LENGTH,
    AnswerDelta,
    AnswerDone,
    AnswerEvent,
    AnswerStopped,
    Exchange,
)
from gemini_core.entities import ChatChanges, Message
from gemini_core.errors import (
    AnswerInProgressError,
    InvalidInputError,
    QuotaExceededError,
    TooManyAnswersError,
    UpstreamError,
    UpstreamQuotaError,
    UpstreamTimeoutError,
)
from gemini_core.files import UploadService
from gemini_core.validation import NO_NUL_PATTERN, NOT_BLANK_PATTERN
from web.container import Container
from web.contract import documents
from web.events import EVENT_STREAM, EventStream, sse_event, wants_events
from web.files import signed_link
from web.principal import provide_principal
from web.problems import Problem, problem_for
from web.schemas import PageSize, stated, to_wire

# --- the wire ---------------------------------------------------------------------


class ChatOut(msgspec.Struct):
    id: int
    title: str | None
    model: str
    system_prompt: str | None
    pinned: bool
    archived: bool
    created_at: datetime
    updated_at: datetime
    message_count: int
    current_message_id: int | None


class MessageOut(msgspec.Struct):
    id: int
    chat_id: int
    role: Literal["user", "assistant"]
    content: str
    file_ids: list[int]
    file_urls: list[str]
    """A signed link to each of `file_ids`, in order: for an `<img src>`, which
    sends no token (see `signed_url` of an upload)."""
    status: Literal["complete", "failed", "stopped", "streaming"]
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime
    parent_id: int | None
    siblings: list[int]


class ChatWithMessagesOut(ChatOut):
    messages: list[MessageOut]


class ChatPageOut(msgspec.Struct):
    items: list[ChatOut]
    next_cursor: str | None


class MessagePageOut(msgspec.Struct):
    items: list[MessageOut]
    next_cursor: str | None


class ExchangeOut(msgspec.Struct):
    user_message: MessageOut
    assistant_message: MessageOut


class DeltaOut(msgspec.Struct):
    text: str


class StoppedOut(msgspec.Struct):
    stopped: list[int]
    """The answers that were being written, now stored ``stopped``."""


class SearchHitOut(msgspec.Struct):
    chat_id: int
    chat_title: str | None
    message: MessageOut
    snippet: str


class SearchOut(msgspec.Struct):
    items: list[SearchHitOut]


# The limits are the core's (it answers 422 naming the field); the body size
# limit keeps any one field from being absurd.
Title = Annotated[
    str, msgspec.Meta(max_length=1000), stated(max_length=MAX_TITLE_LENGTH, pattern=NO_NUL_PATTERN)
]
SystemPrompt = Annotated[
    str,
    msgspec.Meta(max_length=40_000),
    stated(max_length=MAX_SYSTEM_PROMPT_LENGTH, pattern=NO_NUL_PATTERN),
]
# Some text, and no NUL: two patterns, so both hold.
NOT_BLANK_NOR_NUL = [{"pattern": NOT_BLANK_PATTERN}, {"pattern": NO_NUL_PATTERN}]


class NewChatIn(msgspec.Struct):
    title: Title | None = None
    model: str | None = None  # one of the server's models: the document lists them
    system_prompt: SystemPrompt | None = None


class ChatChangesIn(msgspec.Struct):
    """Only the fields present change; ``null`` (or blank) clears a title or system prompt."""

    title: Title | msgspec.UnsetType | None = msgspec.UNSET
    pinned: bool | msgspec.UnsetType = msgspec.UNSET
    archived: bool | msgspec.UnsetType = msgspec.UNSET
    system_prompt: SystemPrompt | msgspec.UnsetType | None = msgspec.UNSET
    model: str | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> ChatChanges:
        def given(value: Any) -> Any:
            return None if value is msgspec.UNSET else value

        return ChatChanges(
            title=given(self.title),
            clear_title=self.title is None,
            system_prompt=given(self.system_prompt),
            clear_system_prompt=self.system_prompt is None,
            pinned=given(self.pinned),
            archived=given(self.archived),
            model=given(self.model),
        )


class AnswerOut(msgspec.Struct):
    assistant_message: MessageOut


class RegenerateIn(msgspec.Struct):
    model: str | msgspec.UnsetType = msgspec.UNSET  # the chat's model when left out


class CurrentIn(msgspec.Struct):
    message_id: int


class NewMessageIn(msgspec.Struct):
    content: Annotated[
        str,
        msgspec.Meta(max_length=200_000),
        stated(max_length=MAX_CONTENT_LENGTH, all_of=NOT_BLANK_NOR_NUL),
    ]
    file_ids: Annotated[
        list[int], msgspec.Meta(max_length=1000), stated(max_items=MAX_FILES_PER_MESSAGE)
    ] = msgspec.field(default_factory=list)
    # Left out: after the chat's current leaf; null: a new first message.
    parent_id: int | msgspec.UnsetType | None = msgspec.UNSET
    model: str | msgspec.UnsetType = msgspec.UNSET  # this answer only


# --- the event stream ----------------------------------------------------------------


STREAM_EVENTS: dict[str, type[msgspec.Struct]] = {
    "user_message": MessageOut,
    "assistant_message": MessageOut,
    "delta": DeltaOut,
    "done": MessageOut,
    "stopped": MessageOut,
    "error": Problem,
}
REGENERATE_EVENTS = {name: data for name, data in STREAM_EVENTS.items() if name != "user_message"}
RESUME_EVENTS = {
    name: data
    for name, data in STREAM_EVENTS.items()
    if name not in ("user_message", "assistant_message")
}


def message_out(message: Message, files: UploadService) -> MessageOut:
    """The message as sent, with a signed link to each of its images."""
    urls = [signed_link(files, file_id, message.user_id).path for file_id in message.file_ids]
    return to_wire(MessageOut, message, file_urls=urls)


async def answer_events(
    message_id: int, events: AsyncIterator[AnswerEvent], files: UploadService
) -> AsyncGenerator[bytes, None]:
    """An answer's deltas, each with the ``id:`` to resume after it, then its end."""
    async with aclosing(events) as answer:  # type: ignore[type-var]
        async for event in answer:
            if isinstance(event, AnswerDelta):
                yield sse_event(
                    "delta", DeltaOut(text=event.text), event_id=f"{message_id}:{event.offset}"
                )
            elif isinstance(event, AnswerDone):
                yield sse_event("done", message_out(event.message, files))
            elif isinstance(event, AnswerStopped):
                yield sse_event("stopped", message_out(event.message, files))
            else:
                yield sse_event("error", problem_for(event.error))


async def exchange_events(
    exchange: Exchange, files: UploadService, *, with_question: bool = True
) -> AsyncGenerator[bytes, None]:
    """The stream of a send (or, without ``user_message``, of a regenerate: the
    question is old). Closing it leaves the answer running."""
    if with_question:
        yield sse_event("user_message", message_out(exchange.user_message, files))
    yield sse_event("assistant_message", message_out(exchange.answer, files))
    async with aclosing(answer_events(exchange.answer.id, exchange.events, files)) as events:
        async for event in events:
            yield event


def resume_offset(message_id: int, last_event_id: str | None, offset: int | None) -> int:
    """Where a resumed stream starts: ``Last-Event-ID`` (``<message id>:<offset>``),
    else ``offset``, else the start."""
    if last_event_id is None:
        return offset or 0
    named, _, sent = last_event_id.strip().partition(":")
    if not (named.isdigit() and sent.isdigit()) or int(named) != message_id:
        raise InvalidInputError(
            f"Last-Event-ID is `<message id>:<offset>`, for this answer `{message_id}:<offset>`.",
            field="Last-Event-ID",
        )
    return int(sent)


# --- the routes -----------------------------------------------------------------------


def answering(
    stored: type[msgspec.Struct],
    description: str,
    events: dict[str, type[msgspec.Struct]],
    *,
    example: Any,
) -> dict[str, Any]:
    """What a route that gets an answer from the model says of itself: JSON (201)
    or, with `Accept: text/event-stream`, 200 and ``events``."""
    named = ", ".join(f"`{name}`" for name in events)
    return {
        "opt": documents(
            raises=[
                AnswerInProgressError,
                TooManyAnswersError,
                QuotaExceededError,
                UpstreamError,
                UpstreamTimeoutError,
                UpstreamQuotaError,
            ],
            example=example,
            events=events,
        ),
        "responses": {
            HTTP_201_CREATED: ResponseSpec(data_container=stored, description=description),
            HTTP_200_OK: ResponseSpec(
                data_container=str,
                media_type=EVENT_STREAM,
                description=f"With `Accept: text/event-stream`: the events {named} "
                "(`delta` once per piece of the answer; `done`, `stopped` or `error` last). "
                "The answer is the server's: a client that leaves does not stop it, and "
                "`GET /chats/{chat_id}/messages/{message_id}/stream` resumes it.",
            ),
        },
    }


class ChatsController(Controller):
    path = "/chats"
    tags = ["chats"]  # noqa: RUF012  (Litestar reads class attributes)
    dependencies = {"principal": Provide(provide_principal)}  # noqa: RUF012

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        operation_id="createChat",
        opt=documents(example={"title": "Trip to Lisbon", "system_prompt": "Answer briefly."}),
    )
    async def create_chat(
        self,
        data: JSONBody[NewChatIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> ChatOut:
        """A chat with no title gets one from its first exchange."""
        chat = await container.chats.create_chat(
            principal.user.id,
            title=data.title,
            model=data.model,
            system_prompt=data.system_prompt,
        )
        return to_wire(ChatOut, chat)

    @get("/", operation_id="listChats")
    async def list_chats(
        self,
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        limit: PageSize = 20,
        cursor: FromQuery[str | None] = None,
        archived: FromQuery[bool] = False,
        q: Annotated[
            str | None,
            QueryParameter(
                schema_extra={"max_length": MAX_TITLE_LENGTH, "pattern": NO_NUL_PATTERN}
            ),
        ] = None,
    ) -> ChatPageOut:
        """Pinned first, then the most recently updated; `q` matches titles.
        Pass `next_cursor` back as `cursor` for the next page."""
        page = await container.chats.list_chats(
            principal.user.id, archived=archived, query=q, limit=limit, cursor=cursor
        )
        return to_wire(ChatPageOut, page)

    @get("/{chat_id:int}", operation_id="getChat")
    async def get_chat(
        self,
        chat_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> ChatWithMessagesOut:
        """The chat with its newest 100 messages, oldest first."""
        chat, messages = await container.chats.get_chat(principal.user.id, chat_id)
        return to_wire(
            ChatWithMessagesOut,
            chat,
            messages=[message_out(m, container.files) for m in messages],
        )

    @patch("/{chat_id:int}", operation_id="updateChat")
    async def update_chat(
        self,
        chat_id: FromPath[int],
        data: JSONBody[ChatChangesIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> ChatOut:
        """Rename, pin, archive, change the system prompt or the model."""
        chat = await container.chats.update_chat(principal.user.id, chat_id, data.changes())
        return to_wire(ChatOut, chat)

    @delete("/{chat_id:int}", status_code=HTTP_204_NO_CONTENT, operation_id="deleteChat")
    async def delete_chat(
        self,
        chat_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> None:
        """Delete the chat and its messages."""
        await container.chats.delete_chat(principal.user.id, chat_id)

    @get("/{chat_id:int}/messages", operation_id="listMessages")
    async def list_messages(
        self,
        chat_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        limit: PageSize = 50,
        before: FromQuery[int | None] = None,
    ) -> MessagePageOut:
        """The newest `limit` messages before the message `before`, oldest first;
        `next_cursor` is the next `before` (null on the oldest page)."""
        page = await container.chats.list_messages(
            principal.user.id, chat_id, limit=limit, before=before
        )
        return MessagePageOut(
            items=[message_out(m, container.files) for m in page.items],
            next_cursor=page.next_cursor,
        )

    @post(
        "/{chat_id:int}/messages",
        status_code=HTTP_201_CREATED,
        operation_id="sendMessage",
        **answering(
            ExchangeOut,
            "The question and its stored answer.",
            STREAM_EVENTS,
            example={"content": "What should I see in Lisbon in one day?", "file_ids": []},
        ),
    )
    async def send_message(
        self,
        request: Request[Any, Any, Any],
        chat_id: FromPath[int],
        data: JSONBody[NewMessageIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> Response[ExchangeOut] | EventStream:
        """Store the message, ask the model with its branch's history, store its answer.

        The message follows the chat's current leaf, or `parent_id` (null: a new
        first message): following an earlier message edits a question, as a new
        branch. `model` answers this once with another of the server's models."""
        exchange = await container.chats.send_message(
            principal.user.id,
            chat_id,
            data.content,
            data.file_ids,
            parent_id=CURRENT_LEAF
            if isinstance(data.parent_id, msgspec.UnsetType)
            else data.parent_id,
            model=None if isinstance(data.model, msgspec.UnsetType) else data.model,
        )
        if wants_events(request):
            return EventStream(exchange_events(exchange, container.files))
        answer = await exchange.complete()
        return Response(
            ExchangeOut(
                user_message=message_out(exchange.user_message, container.files),
                assistant_message=message_out(answer, container.files),
            ),
            status_code=HTTP_201_CREATED,
        )

    @post(
        "/{chat_id:int}/messages/{message_id:int}/regenerate",
        status_code=HTTP_201_CREATED,
        operation_id="regenerateAnswer",
        **answering(AnswerOut, "The new answer, stored.", REGENERATE_EVENTS, example={}),
    )
    async def regenerate(
        self,
        request: Request[Any, Any, Any],
        chat_id: FromPath[int],
        message_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        data: JSONBody[RegenerateIn | None] = None,
    ) -> Response[AnswerOut] | EventStream:
        """Answer a question again: `message_id` names the question or an answer to
        it. The new answer is a sibling of the others and the chat's current leaf."""
        model = None if data is None or isinstance(data.model, msgspec.UnsetType) else data.model
        exchange = await container.chats.regenerate(
            principal.user.id, chat_id, message_id, model=model
        )
        if wants_events(request):
            return EventStream(exchange_events(exchange, container.files, with_question=False))
        answer = await exchange.complete()
        return Response(
            AnswerOut(assistant_message=message_out(answer, container.files)),
            status_code=HTTP_201_CREATED,
        )

    @get(
        "/{chat_id:int}/messages/{message_id:int}/stream",
        operation_id="followAnswer",
        opt=documents(events=RESUME_EVENTS),
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=MessageOut,
                description="The answer as stored now; with `Accept: text/event-stream`, "
                "its events instead: one `delta` with the text after the offset, then "
                "each new piece while it is written, then `done`, `stopped` or `error`.",
            )
        },
    )
    async def follow_answer(
        self,
        request: Request[Any, Any, Any],
        chat_id: FromPath[int],
        message_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                max_length=50,
                pattern="^[0-9]+:[0-9]+$",
                description="`<message id>:<offset>` from the last `delta` received: "
                "resume after it.",
            ),
        ] = None,
        offset: Annotated[
            int | None,
            Parameter(
                ge=0,
                description="Characters of the answer already received (without `Last-Event-ID`).",
            ),
        ] = None,
    ) -> Response[MessageOut] | EventStream:
        """Resume an answer, on any worker: while it is written, whichever process
        writes it, and after it ended (the rest of its text, then its end)."""
        start = resume_offset(message_id, last_event_id, offset)
        message, events = await container.chats.follow(
            principal.user.id, chat_id, message_id, offset=start
        )
        if wants_events(request):
            return EventStream(answer_events(message.id, events, container.files))
        await events.aclose()  # type: ignore[attr-defined]
        return Response(message_out(message, container.files), status_code=HTTP_200_OK)

    @post("/{chat_id:int}/stop", status_code=HTTP_200_OK, operation_id="stopAnswers")
    async def stop(
        self,
        chat_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> StoppedOut:
        """Stop the chat's answers being written, whichever worker or host writes
        them: each is stored `stopped` with its text so far."""
        stopped = await container.chats.stop(principal.user.id, chat_id)
        return StoppedOut(stopped=stopped)

    @put("/{chat_id:int}/current", operation_id="selectBranch")
    async def select_branch(
        self,
        chat_id: FromPath[int],
        data: JSONBody[CurrentIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> ChatWithMessagesOut:
        """Show the branch through `message_id`: the current leaf becomes the newest
        leaf below it (at each step, the newest answer or question)."""
        chat, messages = await container.chats.select_branch(
            principal.user.id, chat_id, data.message_id
        )
        return to_wire(
            ChatWithMessagesOut,
            chat,
            messages=[message_out(m, container.files) for m in messages],
        )


class SearchController(Controller):
    path = "/search"
    tags = ["chats"]  # noqa: RUF012
    dependencies = {"principal": Provide(provide_principal)}  # noqa: RUF012

    @get("/", operation_id="searchMessages")
    async def search(
        self,
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        q: Annotated[
            str,
            QueryParameter(
                schema_extra={"max_length": MAX_SEARCH_LENGTH, "all_of": NOT_BLANK_NOR_NUL}
            ),
        ],
        limit: PageSize = 20,
    ) -> SearchOut:
        """The caller's messages matching the words in `q`, best match first;
        in `snippet` the matched words are wrapped in `**`."""
        hits = await container.chats.search_messages(principal.user.id, q, limit=limit)
        return SearchOut(
            items=[
                to_wire(
                    SearchHitOut,
                    hit,
                    chat_id=hit.message.chat_id,
                    message=message_out(hit.message, container.files),
                )
                for hit in hits
            ]
        )
