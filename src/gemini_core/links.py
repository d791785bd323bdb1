"""Signed links to uploaded images, for pages.

A browser fetches an ``<img src>`` without an ``Authorization`` header, so the
Bearer route cannot serve a page's images. A signed link can: it names the
file, its owner and an expiry, and carries an HMAC-SHA256 over the three,
under a key only the server holds, checked before the file is looked up.
Nobody can make one for another file, owner or time; it is useless once it
expires, and once the file is deleted there is nothing left to serve.

Expiries are rounded up to ``step_seconds``, so the links a server hands out
for one file stay the same for a while and a browser's cache keeps working;
each lives at least ``ttl_seconds``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from gemini_core.errors import PermissionDeniedError

__all__ = ["LINK_EXPIRED", "LINK_INVALID", "FileLinks", "SignedLink"]

LINK_EXPIRED = "This link has expired; ask for the file or its message again for a fresh one."
LINK_INVALID = "This link is not valid."
MAX_SIGNATURE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class SignedLink:
    path: str
    """Where the file is served, with its expiry and signature in the query."""
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class FileLinks:
    """Makes and checks signed links under ``key`` (keep it secret: it is
    derived from the server's secret key)."""

    key: bytes
    ttl_seconds: int = 3600
    step_seconds: int = 600

    def link(self, file_id: int, owner_id: int, now: datetime) -> SignedLink:
        step = self.step_seconds
        expires = math.ceil((now.timestamp() + self.ttl_seconds) / step) * step
        signature = self._sign(file_id, owner_id, expires)
        return SignedLink(
            path=(
                f"/files/{file_id}/content?owner={owner_id}&expires={expires}&signature={signature}"
            ),
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    def check(
        self, file_id: int, owner_id: int, expires: int, signature: str, now: datetime
    ) -> None:
        """``PermissionDeniedError`` unless ``signature`` is this server's for
        the file, its owner and the expiry, and the expiry is still ahead."""
        expected = self._sign(file_id, owner_id, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise PermissionDeniedError(LINK_INVALID)
        if expires <= now.timestamp():
            raise PermissionDeniedError(LINK_EXPIRED)

    def _sign(self, file_id: int, owner_id: int, expires: int) -> str:
        message = f"file {file_id} owner {owner_id} expires {expires}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
