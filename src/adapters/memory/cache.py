"""A cache in this process's memory, with a time to live per key.

Expired keys are dropped when read, and swept at most every five minutes on a
write; until then ``stats`` counts them as expired.
"""

from __future__ import annotations

from gemini_core.ports import CacheStats, Clock

__all__ = ["InMemoryCache"]

SWEEP_EVERY_SECONDS = 300.0


class InMemoryCache:
    """The ``Cache`` port in one process."""

    def __init__(self, *, clock: Clock, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._next_sweep = 0.0

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= self._now():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: bytes, *, ttl_seconds: float) -> None:
        now = self._now()
        if now >= self._next_sweep or len(self._entries) >= self._max_keys:
            self._sweep(now)
        if len(self._entries) >= self._max_keys:
            # Still full of live keys: drop the oldest insertion rather than grow.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (now + ttl_seconds, value)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def _sweep(self, now: float) -> None:
        self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        self._next_sweep = now + SWEEP_EVERY_SECONDS

    async def stats(self) -> CacheStats:
        now = self._now()
        expired = sum(1 for expires_at, _ in self._entries.values() if expires_at <= now)
        return CacheStats(total_keys=len(self._entries), expired_keys=expired)
