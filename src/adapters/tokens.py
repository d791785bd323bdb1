"""Bearer tokens: the ``TokenCodec`` port as JSON Web Tokens signed with HS256.

A token is a JWS in compact form with the header ``{"alg": "HS256", "typ": "JWT"}``
and these claims:

    iss         the issuer, ``"gemini-backend"`` unless configured otherwise
    aud         the audience, likewise
    sub         the user id, as a decimal string (RFC 7519 makes ``sub`` a string)
    sid         the session id, an integer
    jti         a unique id, a string of 1 to 128 characters
    iat, exp    issue and expiry times, whole seconds since the epoch
    token_type  ``"access"`` or ``"refresh"``

The type is a claim named ``token_type`` rather than ``typ``, so it cannot be
confused with the header's ``typ: JWT``. Because it is signed, a refresh token
can never pass as an access token, nor the other way round.

Only HS256 is accepted when decoding, so a token claiming ``alg: none``, an
asymmetric algorithm or another HMAC is refused before its signature is even
looked at. Times are checked against the ``now`` the caller passes (the core's
``Clock``), never the wall clock. Every way a token can fail, including the
library's own exceptions, comes out as one ``AuthenticationError``, so a client
learns nothing about which check refused it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from joserfc import jwt
from joserfc.jwk import OctKey

from gemini_core.errors import AuthenticationError
from gemini_core.ports import TokenClaims, TokenType

__all__ = ["MAX_TOKEN_LENGTH", "JwtTokenCodec", "derive_signing_key"]

MAX_TOKEN_LENGTH: Final = 4096
"""Longer strings are refused unparsed; our own tokens are about 300 characters."""

ALGORITHM: Final = "HS256"
TYPE_CLAIM: Final = "token_type"
MAX_JTI_LENGTH: Final = 128

_HEADER: Final = {"alg": ALGORITHM, "typ": "JWT"}
_REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "sid", "jti", "iat", "exp", TYPE_CLAIM)
_KEY_LABEL: Final = b"gemini-backend/jwt/HS256"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND: Final = timedelta(seconds=1)
_MAX_ID: Final = 2**63 - 1
"""Ids are PostgreSQL BIGINTs; anything larger cannot name a row."""
_MAX_NUMERIC_DATE: Final = int((datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH).total_seconds())
_POSITIVE_DECIMAL: Final = re.compile(r"[1-9][0-9]{0,18}")
_INVALID: Final = "The token is invalid or has expired."


MIN_SECRET_KEY_LENGTH = 32
"""Characters a signing secret must have, in every environment."""


def derive_signing_key(secret_key: str) -> bytes:
    """The HS256 key for tokens: HMAC-SHA256 of a fixed label under ``SECRET_KEY``.

    Deriving instead of signing with ``SECRET_KEY`` itself separates domains: the
    same secret may key other MACs in the application, and a value MAC'd for one
    of those purposes can then never verify as a token signature, nor the other
    way round. It also gives a key of exactly the hash's size for any length of
    secret, as RFC 7518 section 3.2 asks. It adds no entropy: the settings still
    demand a long secret in production.
    """
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        # Refused here, not only by the settings: a library user builds this
        # directly, and a short secret can be found by guessing offline.
        raise ValueError(
            f"secret_key must be at least {MIN_SECRET_KEY_LENGTH} characters "
            f"(got {len(secret_key)}); generate one with secrets.token_urlsafe(32)"
        )
    return hmac.new(secret_key.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


class JwtTokenCodec:
    """The ``TokenCodec`` port on joserfc, HS256 only.

    ``leeway_seconds`` is the clock skew tolerated between the host that signed a
    token and the one checking it: a token is still accepted that many seconds
    past its ``exp``, and with an ``iat`` up to that far ahead of ``now``.
    """

    def __init__(
        self,
        *,
        secret_key: str,
        issuer: str = "gemini-backend",
        audience: str = "gemini-backend",
        leeway_seconds: int = 0,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._key = OctKey.import_key(derive_signing_key(secret_key))
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    def encode(self, claims: TokenClaims) -> str:
        """The signed token. Times are truncated to whole seconds, as JWT carries them.

        ``ValueError`` for claims that ``decode`` would refuse whatever the time
        (naive datetimes, ids out of range, a bad ``jti``): that is a bug in the
        caller, not a bad token.
        """
        _check_id("user_id", claims.user_id)
        _check_id("session_id", claims.session_id)
        if not _is_valid_jti(claims.jti):
            raise ValueError(f"jti must be a string of 1 to {MAX_JTI_LENGTH} characters")
        issued_at = _to_numeric_date("issued_at", claims.issued_at)
        expires_at = _to_numeric_date("expires_at", claims.expires_at)
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(claims.user_id),
            "sid": claims.session_id,
            "jti": claims.jti,
            "iat": issued_at,
            "exp": expires_at,
            TYPE_CLAIM: TokenType(claims.type).value,
        }
        return jwt.encode(_HEADER, payload, self._key, algorithms=[ALGORITHM])

    def decode(self, token: str, *, expected_type: TokenType, now: datetime) -> TokenClaims:
        """The claims of a genuine, unexpired token of ``expected_type``.

        ``AuthenticationError`` for any other token or any non-string.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise AuthenticationError(_INVALID)
        # joserfc reports most failures as JoseError, but a header that is JSON
        # yet not an object (``["alg"]``) escapes as a TypeError. Whatever a
        # stranger's string makes the library raise, the token is simply invalid.
        try:
            payload = self._verified_payload(token, expected_type, now)
        except Exception as exc:
            raise AuthenticationError(_INVALID) from exc
        return _claims_from(payload, expected_type)

    def _verified_payload(
        self, token: str, expected_type: TokenType, now: datetime
    ) -> dict[str, Any]:
        decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
        registry = jwt.JWTClaimsRegistry(
            now=(now - _EPOCH) // _ONE_SECOND,
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            sub={"essential": True},
            sid={"essential": True},
            jti={"essential": True},
            iat={"essential": True},
            exp={"essential": True},
            token_type={"essential": True, "value": expected_type.value},
        )
        # Checks signature-verified claims: presence, iss, aud, the type, and
        # exp > now - leeway and iat <= now + leeway (so now == exp is expired).
        registry.validate(decoded.claims)
        return decoded.claims


def _claims_from(payload: dict[str, Any], expected_type: TokenType) -> TokenClaims:
    """The claims' types and ranges, which joserfc leaves loose (it takes floats
    for times, and any string for ``sub``)."""
    if any(name not in payload for name in _REQUIRED_CLAIMS):
        raise AuthenticationError(_INVALID)
    sub, sid, jti = payload["sub"], payload["sid"], payload["jti"]
    iat, exp = payload["iat"], payload["exp"]
    if not (
        isinstance(sub, str)
        and _POSITIVE_DECIMAL.fullmatch(sub)
        and int(sub) <= _MAX_ID
        and _is_id(sid)
        and _is_valid_jti(jti)
        and _is_numeric_date(iat)
        and _is_numeric_date(exp)
        and payload[TYPE_CLAIM] == expected_type.value
    ):
        raise AuthenticationError(_INVALID)
    return TokenClaims(
        type=expected_type,
        user_id=int(sub),
        session_id=sid,
        jti=jti,
        issued_at=_EPOCH + timedelta(seconds=iat),
        expires_at=_EPOCH + timedelta(seconds=exp),
    )


def _is_id(value: object) -> bool:
    # bool is an int in Python but not in JSON; a token saying "sid": true is not ours.
    return type(value) is int and 0 < value <= _MAX_ID


def _is_numeric_date(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE


def _is_valid_jti(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_JTI_LENGTH


def _check_id(name: str, value: int) -> None:
    if not _is_id(value):
        raise ValueError(f"{name} must be an int from 1 to {_MAX_ID}")


def _to_numeric_date(name: str, value: datetime) -> int:
    """Whole seconds since the epoch, rounded down, in exact integer arithmetic
    (a float timestamp can round 23:59:59.999999 up to the next second)."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    seconds = (value - _EPOCH) // _ONE_SECOND
    if not 0 <= seconds <= _MAX_NUMERIC_DATE:
        raise ValueError(f"{name} is out of range")
    return seconds
