"""The ``ChatRepository`` and ``MessageRepository`` ports in memory."""

from __future__ import annotations

import builtins
from dataclasses import replace
from datetime import datetime

from adapters.memory.store import StoreRepository, check_bigint, check_page, contains, utc
from gemini_core.entities import Chat, ChatChanges, ChatCursor, Message, NewChat, NewMessage
from gemini_core.errors import InvalidInputError, NotFoundError
from gemini_core.ports import SearchHit

__all__ = ["InMemoryChatRepository", "InMemoryMessageRepository"]


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
        chat = self._store.chats.get(message.chat_id)
        if chat is None or chat.user_id != message.user_id:
            raise NotFoundError("No such chat or message.")
        parent_id = chat.current_message_id if message.after_current_leaf else message.parent_id
        parent = None if parent_id is None else self._store.messages.get(parent_id)
        if parent_id is not None and (parent is None or parent.chat_id != chat.id):
            raise NotFoundError("No such chat or message.")
        if any(n is not None and n < 0 for n in (message.prompt_tokens, message.completion_tokens)):
            raise InvalidInputError("A value is out of the allowed range.")
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
        )
        self._store.messages[stored.id] = stored
        self._store.chats[chat.id] = replace(
            chat,
            message_count=chat.message_count + 1,
            updated_at=now,
            current_message_id=stored.id,
        )
        return self._with_siblings(stored)

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
        for message in self._store.messages.values():
            words = _words(message.content)
            if message.user_id == user_id and wanted and wanted <= set(words):
                scored.append((sum(word in wanted for word in words), message))
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
