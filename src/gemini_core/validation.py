"""Rules for the values people type: emails, usernames, names.

Each check returns the cleaned value or raises ``InvalidInputError`` naming
the field, so the HTTP layer can answer 422 with a field list.
"""

from __future__ import annotations

import re

from gemini_core.errors import InvalidInputError

MAX_EMAIL_LENGTH = 254
MAX_FULL_NAME_LENGTH = 100

# Deliberately plain: one @, no spaces or control characters, a dotted domain.
# Whether the address works is what the mailed code proves.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")
# ASCII only: look-alike letters from other scripts would let two names pass
# for one another.
_USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,32}")


def normalize_email(email: str, *, field: str = "email") -> str:
    """The address lower-cased and trimmed; emails compare case-insensitively."""
    cleaned = email.strip().lower()
    if len(cleaned) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(cleaned):
        raise InvalidInputError("Enter a valid email address.", field=field)
    return cleaned


def check_username(username: str, *, field: str = "username") -> str:
    if not _USERNAME.fullmatch(username):
        raise InvalidInputError(
            "Usernames are 3 to 32 letters, digits, '_', '.' or '-'.", field=field
        )
    return username


def clean_full_name(full_name: str | None, *, field: str = "full_name") -> str | None:
    """Trimmed; blank becomes ``None``."""
    if full_name is None:
        return None
    cleaned = " ".join(full_name.split())
    if len(cleaned) > MAX_FULL_NAME_LENGTH:
        raise InvalidInputError(
            f"Names are at most {MAX_FULL_NAME_LENGTH} characters.", field=field
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise InvalidInputError("Names cannot contain control characters.", field=field)
    return cleaned or None
