"""The usage rollup in memory (kept by the message repository's answer steps)."""

from __future__ import annotations

import builtins
from datetime import date

from adapters.memory.store import StoreRepository, check_page
from gemini_core.entities import DailyUsage, UserUsage, UserUsagePage

__all__ = ["InMemoryUsageRepository"]


class InMemoryUsageRepository(StoreRepository):
    """The ``UsageRepository`` port over the shared store's ``usage_days``."""

    async def days(self, user_id: int, first: date, last: date) -> builtins.list[DailyUsage]:
        return [
            DailyUsage(
                day=day,
                messages=count.messages,
                prompt_tokens=count.prompt_tokens,
                completion_tokens=count.completion_tokens,
            )
            for (owner, day), count in sorted(self._store.usage_days.items())
            if owner == user_id and first <= day <= last
        ]

    async def by_user(self, first: date, last: date, *, offset: int, limit: int) -> UserUsagePage:
        check_page(limit=limit, offset=offset)
        sums: dict[int, list[int]] = {}
        for (user_id, day), count in self._store.usage_days.items():
            if first <= day <= last and user_id in self._store.users:
                total = sums.setdefault(user_id, [0, 0, 0])
                total[0] += count.messages
                total[1] += count.prompt_tokens
                total[2] += count.completion_tokens
        ranked = sorted(
            sums.items(), key=lambda item: (-(item[1][1] + item[1][2]), -item[1][0], item[0])
        )
        return UserUsagePage(
            items=[
                UserUsage(
                    user=self._store.users[user_id],
                    messages=messages,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                )
                for user_id, (messages, prompt, completion) in ranked[offset : offset + limit]
            ],
            total=len(ranked),
        )
