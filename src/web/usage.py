"""``/usage``: the caller's answers and tokens per UTC day, and today's quota."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from gemini_core.accounts import Principal
from gemini_core.usage import UsageReport
from web.container import Container
from web.principal import provide_principal
from web.schemas import to_wire


class DayOut(msgspec.Struct):
    date: date
    messages: int
    prompt_tokens: int
    completion_tokens: int


class TotalsOut(msgspec.Struct):
    messages: int
    prompt_tokens: int
    completion_tokens: int


class QuotaOut(msgspec.Struct):
    daily_tokens: int | None
    """Null: no limit."""
    daily_messages: int | None
    used_tokens_today: int
    used_messages_today: int
    resets_at: datetime
    """The next UTC midnight."""


class UsageOut(msgspec.Struct):
    days: list[DayOut]
    totals: TotalsOut
    quota: QuotaOut


# ``from`` is a keyword in Python: the parameters are named for the query.
FirstDay = Annotated[
    date | None,
    QueryParameter(name="from", description="The first UTC day (default: 29 days before `to`)."),
]
LastDay = Annotated[
    date | None,
    QueryParameter(name="to", description="The last UTC day, included (default: today)."),
]


def usage_out(report: UsageReport) -> UsageOut:
    return UsageOut(
        days=[
            DayOut(
                date=day.day,
                messages=day.messages,
                prompt_tokens=day.prompt_tokens,
                completion_tokens=day.completion_tokens,
            )
            for day in report.days
        ],
        totals=to_wire(TotalsOut, report.totals),
        quota=to_wire(QuotaOut, report.quota),
    )


class UsageController(Controller):
    path = "/usage"
    tags = ["usage"]  # noqa: RUF012  (Litestar reads class attributes)
    dependencies = {"principal": Provide(provide_principal)}  # noqa: RUF012

    @get("/", operation_id="getUsage")
    async def usage(
        self,
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
        first: FirstDay = None,
        last: LastDay = None,
    ) -> UsageOut:
        """The caller's answers and their tokens per UTC day over at most 366 days
        (every day listed, oldest first), the totals, and today's quota."""
        report = await container.usage.report(principal.user, first=first, last=last)
        return usage_out(report)
