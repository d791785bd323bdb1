"""Rules for the values people type: emails, usernames, names.

Each check returns the cleaned value or raises ``InvalidInputError`` naming
the field, so the HTTP layer can answer 422 with a field list.
"""

from __future__ import annotations

import re
import unicodedata

from gemini_core.errors import InvalidInputError

MAX_EMAIL_LENGTH = 254
MAX_FULL_NAME_LENGTH = 100

# An address we can mail (RFC 5321's dot-string local part, of RFC 5322's
# atom characters, plus any non-ASCII letter for servers that speak SMTPUTF8)
# at a domain of letters, digits and hyphens: an international domain arrives
# here already IDNA-encoded. Whether the address works is what the code proves.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(\.{_ATOM})*")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"({_LABEL}\.)+([a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})")
# Characters no one can see or type apart: zero-width and direction marks,
# controls, unassigned and private-use code points, spaces of every kind.
_INVISIBLE = {"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs"}
MAX_LOCAL_PART_BYTES = 64
# ASCII only: look-alike letters from other scripts would let two names pass
# for one another.
USERNAME_PATTERN = r"^[A-Za-z0-9_.\-]{3,32}$"
# The same rules as JSON Schema patterns (ECMA-262), for documents that state them.
# Text that is not blank holds a character Python's str.strip() keeps:
NOT_BLANK_PATTERN = (
    r"[^\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000]"
)
# Text a column can store holds no NUL:
NO_NUL_PATTERN = r"^[^\u0000]*$"
# A name holds no control character that is not whitespace (whitespace is collapsed):
NAME_PATTERN = r"^[^\u0000-\u0008\u000e-\u001b\u007f]*$"
_USERNAME = re.compile(USERNAME_PATTERN)


def normalize_email(email: str, *, field: str = "email") -> str:
    """The address trimmed, lower-cased, its domain IDNA-encoded (``bücher.de``
    becomes ``xn--bcher-kva.de``), or ``InvalidInputError`` for one that could
    not be mailed. Emails compare case-insensitively."""
    refused = InvalidInputError("Enter a valid email address.", field=field)
    cleaned = unicodedata.normalize("NFC", email.strip().lower())
    if any(unicodedata.category(ch) in _INVISIBLE for ch in cleaned):
        raise refused
    local, at, domain = cleaned.rpartition("@")
    if not at or len(local.encode()) > MAX_LOCAL_PART_BYTES or not _LOCAL_PART.fullmatch(local):
        raise refused
    try:
        # The standard library's IDNA 2003: maps look-alikes such as full-width
        # letters to their plain forms and refuses what cannot be a domain.
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise refused from None
    address = f"{local}@{domain}"
    if len(address) > MAX_EMAIL_LENGTH or not _DOMAIN.fullmatch(domain):
        raise refused
    return address


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
    if len(full_name) > MAX_FULL_NAME_LENGTH:  # as sent: the limit a client can check
        raise InvalidInputError(
            f"Names are at most {MAX_FULL_NAME_LENGTH} characters.", field=field
        )
    cleaned = " ".join(full_name.split())
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise InvalidInputError("Names cannot contain control characters.", field=field)
    return cleaned or None
