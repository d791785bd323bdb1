"""The ``ChatRepository`` and ``MessageRepository`` ports in memory."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from adapters.memory.store import (
    DayCount,
    StoreRepository,
    check_bigint,
    check_page,
    contains,
    utc,
)
from gemini_core.entities import (
    Chat,
    ChatChanges,
    ChatCursor,
    Message,
    MessageRole,
    MessageStatus,
    NewAnswer,
    NewChat,
    NewMessage,
)
from gemini_core.errors import (
    AnswerInProgressError,
    InvalidInputError,
    NotFoundError,
    TooManyAnswersError,
)
from gemini_core.ports import SEARCH_WINDOW, SearchHit
from gemini_core.usage import estimate_tokens

__all__ = ["InMemoryChatRepository", "InMemoryMessageRepository"]

# The PostgreSQL adapter's words, so a caller cannot tell the two apart.
_NO_SUCH_CHAT_OR_MESSAGE = "No such chat or message."
_ANSWER_IN_PROGRESS = (
    "An answer is being written in this chat; wait for it, or stop it, then send again."
)
_TOO_MANY_ANSWERS = "You have as many answers being written as allowed; wait for one to end."
_TOO_MANY_ANSWERS_RETRY_AFTER = 5
# Answers whose owner may still store their end.
_UNFINISHED = frozenset({MessageStatus.STREAMING, MessageStatus.STOPPED})


def _chat_order(chat: Chat) -> tuple[bool, datetime, int]:
    return (chat.pinned, chat.updated_at, chat.id)


class InMemoryChatRepository(StoreRepository):
    async def add(self, chat: NewChat) -> Chat:
        self._store.require_user(chat.user_id)
        now = self._now()
        stored = Chat(
            id=self._store.next_id("chats"),
            user_id=chat.user_id,
            title=chat.title,
            model=chat.model,
            system_prompt=chat.system_prompt,
            pinned=False,
            archived=False,
            created_at=now,
            updated_at=now,
            message_count=0,
        )
        self._store.chats[stored.id] = stored
        return stored

    async def get(self, user_id: int, chat_id: int) -> Chat | None:
        chat = self._store.chats.get(chat_id)
        return chat if chat is not None and chat.user_id == user_id else None

    async def list(
        self,
        user_id: int,
        *,
        archived: bool,
        query: str | None,
        limit: int,
        after: ChatCursor | None,
    ) -> builtins.list[Chat]:
        check_page(limit=limit)
        cursor = None if after is None else (after.pinned, utc(after.updated_at), after.id)
        chats = sorted(
            (
                chat
                for chat in self._store.chats.values()
                if chat.user_id == user_id
                and chat.archived == archived
                and (query is None or contains(chat.title, query))
                and (cursor is None or _chat_order(chat) < cursor)
            ),
            key=_chat_order,
            reverse=True,
        )
        return chats[:limit]

    async def update(self, user_id: int, chat_id: int, changes: ChatChanges) -> Chat | None:
        chat = await self.get(user_id, chat_id)
        if chat is None:
            return None
        title = chat.title if changes.title is None else changes.title
        prompt = chat.system_prompt if changes.system_prompt is None else changes.system_prompt
        updated = replace(
            chat,
            title=None if changes.clear_title else title,
            system_prompt=None if changes.clear_system_prompt else prompt,
            pinned=chat.pinned if changes.pinned is None else changes.pinned,
            archived=chat.archived if changes.archived is None else changes.archived,
            model=chat.model if changes.model is None else changes.model,
            updated_at=self._now(),
        )
        self._store.chats[chat_id] = updated
        return updated

    async def select_branch(self, user_id: int, chat_id: int, message_id: int) -> Chat | None:
        check_bigint(message_id)
        chat = await self.get(user_id, chat_id)
        message = self._store.messages.get(message_id)
        if chat is None or message is None or message.chat_id != chat_id:
            return None
        leaf = message.id
        while children := [m.id for m in self._store.messages.values() if m.parent_id == leaf]:
            leaf = max(children)
        updated = replace(chat, current_message_id=leaf)
        self._store.chats[chat_id] = updated
        return updated

    async def delete(self, user_id: int, chat_id: int) -> bool:
        if await self.get(user_id, chat_id) is None:
            return False
        del self._store.chats[chat_id]
        for message_id in [m.id for m in self._store.messages.values() if m.chat_id == chat_id]:
            del self._store.messages[message_id]
        return True


class InMemoryMessageRepository(StoreRepository):
    async def add(self, message: NewMessage) -> Message:
        chat, parent_id = self._placement(message)
        return self._with_siblings(self._store_message(message, chat, parent_id))

    def _placement(self, message: NewMessage) -> tuple[Chat, int | None]:
        """The chat ``message`` goes in and its parent, as ``add`` checks them."""
        chat = self._store.chats.get(message.chat_id)
        if chat is None or chat.user_id != message.user_id:
            raise NotFoundError(_NO_SUCH_CHAT_OR_MESSAGE)
        parent_id = chat.current_message_id if message.after_current_leaf else message.parent_id
        parent = None if parent_id is None else self._store.messages.get(parent_id)
        if parent_id is not None and (parent is None or parent.chat_id != chat.id):
            raise NotFoundError(_NO_SUCH_CHAT_OR_MESSAGE)
        if any(n is not None and n < 0 for n in (message.prompt_tokens, message.completion_tokens)):
            raise InvalidInputError("A value is out of the allowed range.")
        return chat, parent_id

    def _store_message(
        self, message: NewMessage, chat: Chat, parent_id: int | None, *, owner: int | None = None
    ) -> Message:
        """Store a checked message: count it on its chat and make it the current leaf."""
        now = self._now()
        stored = Message(
            id=self._store.next_id("messages"),
            chat_id=message.chat_id,
            user_id=message.user_id,
            role=message.role,
            content=message.content,
            file_ids=tuple(message.file_ids),
            status=message.status,
            model=message.model,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            created_at=now,
            parent_id=parent_id,
            owner=owner,
        )
        self._store.messages[stored.id] = stored
        self._store.chats[chat.id] = replace(
            chat,
            message_count=chat.message_count + 1,
            updated_at=now,
            current_message_id=stored.id,
        )
        return stored

    async def get(self, user_id: int, chat_id: int, message_id: int) -> Message | None:
        check_bigint(message_id)
        message = self._store.messages.get(message_id)
        if message is None or message.chat_id != chat_id or message.user_id != user_id:
            return None
        return self._with_siblings(message)

    async def branch(
        self, user_id: int, chat_id: int, *, ending_at: int, limit: int, inclusive: bool = True
    ) -> builtins.list[Message]:
        check_page(limit=limit)
        check_bigint(ending_at)
        found = await self.get(user_id, chat_id, ending_at)
        path: builtins.list[Message] = []
        at = found.id if found is not None else None
        if not inclusive and found is not None:
            at = found.parent_id
        while at is not None and len(path) < limit:
            message = self._store.messages[at]
            path.append(message)
            at = message.parent_id
        return [self._with_siblings(m) for m in reversed(path)]

    # --- answers being written ------------------------------------------------------
    # Every check comes before anything is stored, so a refusal stores nothing.

    async def start_answer(self, answer: NewAnswer) -> tuple[Message, Message]:
        running = [
            m
            for m in self._store.messages.values()
            if m.user_id == answer.user_id and m.status is MessageStatus.STREAMING
        ]
        if answer.max_running is not None:
            # As PostgreSQL refuses, under the user's turn: the chat's own answer, then the cap.
            if any(m.chat_id == answer.chat_id for m in running):
                raise AnswerInProgressError(_ANSWER_IN_PROGRESS)
            if len(running) >= answer.max_running:
                raise TooManyAnswersError(
                    _TOO_MANY_ANSWERS, retry_after=_TOO_MANY_ANSWERS_RETRY_AFTER
                )
        question: NewMessage | Message | None = answer.question
        parent_id = None
        if answer.question is not None:
            _, parent_id = self._placement(answer.question)
        else:
            check_bigint(answer.question_id)
            question = self._store.messages.get(answer.question_id or 0)
        chat = self._store.chats.get(answer.chat_id)
        if (
            chat is None
            or chat.user_id != answer.user_id
            or question is None
            or (question.chat_id, question.user_id, question.role)
            != (chat.id, chat.user_id, MessageRole.USER)
        ):
            raise NotFoundError(_NO_SUCH_CHAT_OR_MESSAGE)
        if not 0 < answer.owner < 2**31:  # a positive int4, as the column takes
            raise InvalidInputError("A value is out of the allowed range.")
        if any(m.chat_id == chat.id for m in running):
            raise AnswerInProgressError(_ANSWER_IN_PROGRESS)
        day = self._now().date() if answer.quota is None else answer.quota.day
        count = self._store.usage_days.get((answer.user_id, day)) or DayCount()
        if answer.quota is not None and (
            refusal := answer.quota.refusal(
                messages_used=count.messages,
                tokens_used=count.prompt_tokens + count.completion_tokens,
            )
        ):
            raise refusal

        count.messages += 1
        self._store.usage_days[answer.user_id, day] = count
        if isinstance(question, NewMessage):
            question = self._store_message(question, chat, parent_id)
            chat = self._store.chats[chat.id]
        written = NewMessage(
            chat_id=chat.id,
            user_id=chat.user_id,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.STREAMING,
            model=answer.model,
        )
        added = self._store_message(written, chat, question.id, owner=answer.owner)
        self._store.answer_days[added.id] = day
        return self._with_siblings(question), self._with_siblings(added)

    async def save_progress(self, texts: Mapping[int, str]) -> None:
        for message_id, text in texts.items():
            message = self._store.messages.get(message_id)
            if message is not None and message.status is MessageStatus.STREAMING:
                self._store.messages[message_id] = replace(message, content=text)

    async def finish_answer(
        self,
        message_id: int,
        *,
        status: MessageStatus,
        content: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> Message | None:
        if not status.final:
            raise InvalidInputError("An answer ends complete, failed or stopped.")
        check_bigint(message_id)
        if any(n is not None and n < 0 for n in (prompt_tokens, completion_tokens)):
            raise InvalidInputError("A value is out of the allowed range.")
        message = self._store.messages.get(message_id)
        if message is None or message.owner is None or message.status not in _UNFINISHED:
            return None
        finished = replace(
            message,
            status=status if message.status is MessageStatus.STREAMING else message.status,
            content=content,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            owner=None,
        )
        self._store.messages[message_id] = finished
        self._count_tokens(finished)
        return self._with_siblings(finished)

    def _count_tokens(self, answer: Message) -> None:
        """Add an answer's tokens to its day in the rollup (as a finish does)."""
        day = self._store.answer_days.get(answer.id)
        if day is None:
            return
        count = self._store.usage_days.setdefault((answer.user_id, day), DayCount())
        count.prompt_tokens += answer.prompt_tokens or 0
        count.completion_tokens += answer.completion_tokens or 0

    async def stop_answers(self, user_id: int, chat_id: int) -> builtins.list[int]:
        stopped = sorted(
            m.id
            for m in self._store.messages.values()
            if m.chat_id == chat_id and m.user_id == user_id and m.status is MessageStatus.STREAMING
        )
        for message_id in stopped:
            message = self._store.messages[message_id]
            self._store.messages[message_id] = replace(message, status=MessageStatus.STOPPED)
        return stopped

    async def fail_orphaned(self) -> builtins.list[int]:
        failed = []
        for message in sorted(self._store.messages.values(), key=lambda m: m.id):
            if message.owner is None or message.owner in self._store.live_owners:
                continue
            status = message.status
            if status is MessageStatus.STREAMING:
                status = MessageStatus.FAILED
                failed.append(message.id)
            completion = message.completion_tokens
            ended = replace(
                message,
                status=status,
                owner=None,
                completion_tokens=estimate_tokens(message.content)
                if completion is None
                else completion,
            )
            self._store.messages[message.id] = ended
            if completion is None:
                self._count_tokens(ended)
        return failed

    def _with_siblings(self, message: Message) -> Message:
        siblings = sorted(
            m.id
            for m in self._store.messages.values()
            if m.chat_id == message.chat_id and m.parent_id == message.parent_id
        )
        return replace(message, siblings=tuple(siblings))

    async def search(self, user_id: int, query: str, *, limit: int) -> builtins.list[SearchHit]:
        """Every word of ``query`` must appear in the message, in any case; more
        occurrences rank higher (no stemming, unlike PostgreSQL's English search)."""
        check_page(limit=limit)
        wanted = set(_words(query))
        scored = []
        # As PostgreSQL does: only the newest SEARCH_WINDOW matches are ranked.
        for message in sorted(self._store.messages.values(), key=lambda m: m.id, reverse=True):
            words = _words(message.content)
            if message.user_id == user_id and wanted and wanted <= set(words):
                scored.append((sum(word in wanted for word in words), message))
                if len(scored) == SEARCH_WINDOW:
                    break
        scored.sort(key=lambda hit: (hit[0], hit[1].id), reverse=True)
        return [
            SearchHit(
                message=self._with_siblings(message),
                chat_title=self._store.chats[message.chat_id].title,
                snippet=_snippet(message.content, wanted),
            )
            for _, message in scored[:limit]
        ]


def _words(text: str) -> builtins.list[str]:
    return "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()


def _snippet(text: str, wanted: set[str], width: int = 30) -> str:
    """Up to ``width`` words around the first match, matches wrapped in ``**``."""
    words = text.split()
    first = next((n for n, word in enumerate(words) if set(_words(word)) & wanted), 0)
    start = max(0, first - width // 3)
    shown = [
        f"**{word}**" if set(_words(word)) & wanted else word
        for word in words[start : start + width]
    ]
    return ("… " if start else "") + " ".join(shown) + (" …" if start + width < len(words) else "")
