"""What the model adapters share: the deadline of one call, and Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import math
from datetime import UTC, datetime

DEFAULT_RETRY_AFTER = 30
TIMED_OUT = "The model did not answer in time."
BROKE_OFF = "The model's answer broke off."
QUOTA = "The model's quota is used up for now; try again later."


def deadline_after(seconds: float) -> float:
    """The event loop's time ``seconds`` from now, for ``asyncio.timeout_at``.

    Each wait inside a call is bounded by the one deadline (never a ``yield``:
    a timeout spanning a yield would fire in whatever the reader is doing).
    """
    return asyncio.get_running_loop().time() + seconds


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> int:
    """A ``Retry-After`` header (seconds or an HTTP date) in whole seconds, at least 1."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    try:
        return max(1, math.ceil(float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(1, math.ceil((when - (now or datetime.now(UTC))).total_seconds()))
