"""The password policy: 8 to 128 characters of any kind, not a common password,
and not the user's own email or username.

Length counts characters (code points), not bytes, so "8 emoji" is a valid
password. Nothing else is required (no digits, no symbols): long and uncommon
beats short and decorated. The common passwords are the 8,354 entries of 8 or
more characters in Django's list (see ``data/README.md``); a password is refused when its
lower-cased form is on it exactly, with no other fuzzing, so users can predict
what is accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources

from gemini_core.errors import InvalidInputError

MIN_LENGTH = 8
MAX_LENGTH = 128

_COMMON_PASSWORDS_FILE = "common-passwords.txt"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The common passwords, lower-cased; read from package data on first use."""
    text = (resources.files("gemini_core") / "data" / _COMMON_PASSWORDS_FILE).read_text(
        encoding="utf-8"
    )
    return frozenset(line for line in text.splitlines() if line)


def password_problem(password: str, *, user_inputs: Iterable[str] = ()) -> str | None:
    """A sentence saying what is wrong with ``password``, or ``None`` if it is fine.

    ``user_inputs`` are values the password must not equal, compared
    case-insensitively: the user's email, its local part, the username.
    Only the first problem is reported.
    """
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters long."
    if len(password) > MAX_LENGTH:
        return f"Password must be at most {MAX_LENGTH} characters long."
    if password.lower() in common_passwords():
        return "This password is too common; choose a less predictable one."
    folded = password.casefold()
    if any(folded == value.casefold() for value in user_inputs):
        return "Password must not be the same as your email or username."
    return None


def check_password(
    password: str, *, field: str = "password", user_inputs: Iterable[str] = ()
) -> None:
    """Raise ``InvalidInputError`` on ``field`` when ``password`` breaks the policy."""
    problem = password_problem(password, user_inputs=user_inputs)
    if problem is not None:
        raise InvalidInputError(problem, field=field)
