"""Usage and daily quotas: what each user's answers cost, and the limits on them.

Every answer counts on the UTC day it starts: one answer, plus the prompt and
completion tokens the model reported for it (or an estimate: see
``estimate_tokens``). The store keeps a per-user, per-day rollup in the steps
that start and finish answers, so reports read a few rows per user and day,
never the messages.

A user's limits for a day are their own (``User.daily_message_quota`` and
``daily_token_quota``) or else the deployment's defaults; admins have only
their own. ``Quotas.today`` decides them and the day, from the clock; the store
applies them while it reserves the answer, under a lock of that user's day, so
parallel sends on any number of processes cannot together pass the message
quota. Tokens are only known when an answer ends, so the token quota refuses
starts once a day's tokens have reached it: answers already running when it
was reached may take the day past it, nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gemini_core.entities import DailyQuota, DailyUsage, User, UserUsage
from gemini_core.errors import InvalidInputError
from gemini_core.llm import LlmRequest, Usage
from gemini_core.pagination import check_page_size
from gemini_core.ports import Clock, UsageRepository, UserRepository

CHARACTERS_PER_TOKEN = 4
"""What an estimate counts as one token (the usual rule of thumb for English)."""

MAX_REPORT_DAYS = 366
"""The longest range one usage report covers."""

DEFAULT_REPORT_DAYS = 30
"""The range of a report that names no dates: the last 30 days, today included."""


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is, for a model that did not say: one per
    ``CHARACTERS_PER_TOKEN`` characters, rounded up."""
    return math.ceil(len(text) / CHARACTERS_PER_TOKEN)


def accounted(usage: Usage, request: LlmRequest | None, answer: str) -> Usage:
    """``usage`` with each count the model did not report estimated: the prompt
    from the request's text (none when no request was made), the completion
    from the answer's text so far."""
    prompt = usage.prompt_tokens
    if prompt is None:
        texts = (
            ()
            if request is None
            else (request.system_prompt or "", *(t.text for t in request.turns))
        )
        prompt = sum(estimate_tokens(text) for text in texts)
    completion = usage.completion_tokens
    if completion is None:
        completion = estimate_tokens(answer)
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


@dataclass(frozen=True, slots=True)
class QuotaRules:
    """The deployment's default daily limits; ``None``: no limit."""

    daily_tokens: int | None = None
    daily_messages: int | None = None

    def __post_init__(self) -> None:
        for name in ("daily_tokens", "daily_messages"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more, or None")


@dataclass(frozen=True, slots=True)
class UsageTotals:
    messages: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A user's limits today (``None``: no limit), what today has used, and
    when the day ends."""

    daily_tokens: int | None
    daily_messages: int | None
    used_tokens_today: int
    used_messages_today: int
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class UsageReport:
    days: list[DailyUsage]
    """Every day of the range, oldest first; days without answers hold zeros."""
    totals: UsageTotals
    quota: QuotaState


@dataclass(frozen=True, slots=True)
class UsersUsagePage:
    items: list[UserUsage]
    total: int
    page: int
    size: int
    pages: int


class Quotas:
    """Which day it is, when it ends, and a user's limits for it."""

    def __init__(self, rules: QuotaRules, *, clock: Clock, users: UserRepository) -> None:
        self._rules = rules
        self._clock = clock
        self._users = users

    def limits(self, user: User) -> tuple[int | None, int | None]:
        """The user's (messages, tokens) limits: their own, else (for users who
        are not admins) the deployment's."""
        messages, tokens = user.daily_message_quota, user.daily_token_quota
        if not user.is_admin:
            messages = self._rules.daily_messages if messages is None else messages
            tokens = self._rules.daily_tokens if tokens is None else tokens
        return messages, tokens

    async def today_for(self, user_id: int) -> DailyQuota:
        """``today`` for the user with this id, as their row is now (a user not
        found has the deployment's limits)."""
        user = await self._users.get(user_id)
        if user is None:
            return self._day(self._rules.daily_messages, self._rules.daily_tokens)
        return self.today(user)

    def today(self, user: User) -> DailyQuota:
        """What an answer starting now counts on and is checked against."""
        return self._day(*self.limits(user))

    def _day(self, messages: int | None, tokens: int | None) -> DailyQuota:
        now = self._clock.now().astimezone(UTC)
        resets_at = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
        return DailyQuota(
            day=now.date(),
            resets_at=resets_at,
            retry_after=max(1, math.ceil((resets_at - now).total_seconds())),
            messages=messages,
            tokens=tokens,
        )


class UsageService:
    """Usage reports: a user's own days, and every user's totals for admins."""

    def __init__(self, *, usage: UsageRepository, quotas: Quotas, clock: Clock) -> None:
        self._usage = usage
        self._quotas = quotas
        self._clock = clock

    def _range(self, first: date | None, last: date | None) -> tuple[date, date]:
        """The days a report covers: as given, or ending today, or the last
        ``DEFAULT_REPORT_DAYS``; at most ``MAX_REPORT_DAYS``."""
        today = self._clock.now().astimezone(UTC).date()
        if last is None:
            last = today if first is None else max(first, today)
        if first is None:
            span = timedelta(days=DEFAULT_REPORT_DAYS - 1)
            first = last - span if last - date.min >= span else date.min
        if first > last:
            raise InvalidInputError("'from' must not be after 'to'.", field="from")
        if (last - first).days >= MAX_REPORT_DAYS:
            raise InvalidInputError(f"A report covers at most {MAX_REPORT_DAYS} days.", field="to")
        return first, last

    async def report(
        self, user: User, *, first: date | None = None, last: date | None = None
    ) -> UsageReport:
        """The user's answers and tokens per day from ``first`` to ``last`` (UTC
        days, both included), their totals, and today's quota."""
        first, last = self._range(first, last)
        quota = self._quotas.today(user)
        # One read for the range and today, even when today is outside the range.
        found = await self._usage.days(user.id, min(first, quota.day), max(last, quota.day))
        by_day = {d.day: d for d in found}
        days = [
            by_day.get(day) or DailyUsage(day=day, messages=0, prompt_tokens=0, completion_tokens=0)
            for day in _dates(first, last)
        ]
        today = by_day.get(quota.day)
        return UsageReport(
            days=days,
            totals=UsageTotals(
                messages=sum(d.messages for d in days),
                prompt_tokens=sum(d.prompt_tokens for d in days),
                completion_tokens=sum(d.completion_tokens for d in days),
            ),
            quota=QuotaState(
                daily_tokens=quota.tokens,
                daily_messages=quota.messages,
                used_tokens_today=0 if today is None else today.tokens,
                used_messages_today=0 if today is None else today.messages,
                resets_at=quota.resets_at,
            ),
        )

    async def by_user(
        self,
        *,
        first: date | None = None,
        last: date | None = None,
        page: int = 1,
        size: int = 20,
    ) -> UsersUsagePage:
        """Every user's usage from ``first`` to ``last``, biggest users (by
        tokens, then answers) first, a page at a time."""
        if page < 1:
            raise InvalidInputError("Pages start at 1.", field="page")
        check_page_size(size, field="size")
        first, last = self._range(first, last)
        found = await self._usage.by_user(first, last, offset=(page - 1) * size, limit=size)
        return UsersUsagePage(
            items=found.items,
            total=found.total,
            page=page,
            size=size,
            pages=math.ceil(found.total / size),
        )


def _dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
