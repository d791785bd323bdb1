"""Schemathesis hooks, loaded by ``st run`` through ``SCHEMATHESIS_HOOKS``: every
request is signed in as a normal user the contract test signed up.

A fixed ``Authorization`` header would die with the first ``POST /auth/logout``,
or the first ``DELETE /auth/sessions/{session_id}`` that names the run's own
session (ids are small integers: the fuzzer finds it at once), and every later
request would be a 401 that tests nothing. Schemathesis re-logs in and replays
on a 401 in its coverage and fuzzing phases, but not in the stateful one.

So those two operations sign in as a second user, with a session of their own
for every case: the first user's session, which every other operation uses,
can never be ended by the run (another user's session id is a 404), and
nothing is excluded. The first user's token is still fetched by logging in,
so it is renewed if it expires and re-fetched on a 401.

The contract test passes the server and the accounts in the environment.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ["CONTRACT_BASE_URL"]
USER_EMAIL = os.environ["CONTRACT_USER_EMAIL"]
SPARE_EMAIL = os.environ["CONTRACT_SPARE_EMAIL"]
PASSWORD = os.environ["CONTRACT_PASSWORD"]
SESSION_ENDING = ["logout", "revokeSession"]


def access_token(email: str) -> str:
    response = httpx.post(
        f"{BASE_URL}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def bearer(case: Any, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.auth().skip_for(operation_id=SESSION_ENDING)
class SignedInUser:
    """The user every operation but the session-ending ones runs as (cached)."""

    def get(self, case: Any, context: Any) -> str:
        return access_token(USER_EMAIL)

    def set(self, case: Any, data: str, context: Any) -> None:
        bearer(case, data)


@schemathesis.auth(refresh_interval=None).apply_to(operation_id=SESSION_ENDING)
class FreshSpareSession:
    """The second user, signed in anew for each case (no cache)."""

    def get(self, case: Any, context: Any) -> str:
        return access_token(SPARE_EMAIL)

    def set(self, case: Any, data: str, context: Any) -> None:
        bearer(case, data)
