"""The system clock. (One that tests move by hand: ``adapters.memory.FakeClock``.)"""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """The ``Clock`` port on the system's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)
