"""Rate limiting in this process's memory: a fixed-window counter per key.

The original guide's behaviour: counts reset when the process restarts and are
per worker. Expired windows are swept at most every five minutes, on the next
hit, so an idle server does no work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gemini_core.ports import Clock, RateLimitDecision, RateLimiterStats

__all__ = ["InMemoryRateLimiter"]

SWEEP_EVERY_SECONDS = 300.0


@dataclass(slots=True)
class _Window:
    ends_at: float
    count: int


class InMemoryRateLimiter:
    """The ``RateLimiter`` port in one process. Exact under concurrency: a
    decision never awaits, so coroutines cannot interleave inside one."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._next_sweep = 0.0

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        now = self._now()
        if now >= self._next_sweep:
            self._sweep(now)
        window = self._windows.get(key)
        if window is None or window.ends_at <= now:
            window = self._windows[key] = _Window(ends_at=now + window_seconds, count=0)
        reset_after = max(1, math.ceil(window.ends_at - now))
        if window.count >= limit:
            return RateLimitDecision(
                allowed=False,
                limit=limit,
                remaining=0,
                reset_after=reset_after,
                retry_after=reset_after,
            )
        window.count += 1
        return RateLimitDecision(
            allowed=True,
            limit=limit,
            remaining=limit - window.count,
            reset_after=reset_after,
            retry_after=0,
        )

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w.ends_at > now}
        self._next_sweep = now + SWEEP_EVERY_SECONDS

    async def stats(self) -> RateLimiterStats:
        now = self._now()
        live = [w for w in self._windows.values() if w.ends_at > now]
        return RateLimiterStats(
            total_identifiers=len(live), total_requests=sum(w.count for w in live)
        )
