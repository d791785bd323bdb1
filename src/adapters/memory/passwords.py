"""A password hasher cheap enough for tests. (The real one: ``adapters.passwords``.)"""

from __future__ import annotations

from adapters.passwords import Argon2PasswordHasher

__all__ = ["FastPasswordHasher"]


class FastPasswordHasher(Argon2PasswordHasher):
    """For tests only: real Argon2id at the lowest cost argon2 accepts
    (t=1, m=8 KiB, p=1), so a hash takes microseconds. Never use it in production."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
