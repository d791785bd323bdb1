"""The JWT codec: what it signs comes back intact, and nothing else gets through.

Hostile tokens are built by hand or with joserfc directly, under the codec's own
key, so each test breaks exactly one thing and the rest of the token is genuine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from adapters.tokens import MAX_TOKEN_LENGTH, JwtTokenCodec, derive_signing_key
from gemini_core.errors import AuthenticationError
from gemini_core.ports import TokenClaims, TokenType

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
IAT = int(NOW.timestamp())
EXP = IAT + 900
KEY = OctKey.import_key(derive_signing_key(SECRET))
INVALID = "The token is invalid or has expired."

ACCESS = TokenType.ACCESS
REFRESH = TokenType.REFRESH


def _codec(**options: Any) -> JwtTokenCodec:
    return JwtTokenCodec(secret_key=SECRET, **options)


def _claims(
    token_type: TokenType = ACCESS,
    *,
    issued_at: datetime = NOW,
    expires_at: datetime = NOW + timedelta(seconds=900),
) -> TokenClaims:
    return TokenClaims(
        type=token_type,
        user_id=42,
        session_id=7,
        jti="0f8e6c1d-jti",
        issued_at=issued_at,
        expires_at=expires_at,
    )


def _payload(**changes: Any) -> dict[str, Any]:
    """The claims of a genuine access token, with ``changes`` applied."""
    payload: dict[str, Any] = {
        "iss": "gemini-backend",
        "aud": "gemini-backend",
        "sub": "42",
        "sid": 7,
        "jti": "0f8e6c1d-jti",
        "iat": IAT,
        "exp": EXP,
        "token_type": "access",
    }
    payload.update(changes)
    return payload


def _sign(payload: dict[str, Any], *, key: OctKey = KEY, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg, "typ": "JWT"}, payload, key, algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: object) -> str:
    return _b64(json.dumps(value).encode())


def _hs256(signing_input: str, key: bytes) -> str:
    return _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def _refused(token: object, *, expected_type: TokenType = ACCESS, now: datetime = NOW) -> None:
    with pytest.raises(AuthenticationError) as caught:
        _codec().decode(token, expected_type=expected_type, now=now)  # type: ignore[arg-type]
    assert type(caught.value) is AuthenticationError
    assert caught.value.detail == INVALID


# --- what it signs comes back ------------------------------------------------


@pytest.mark.parametrize("token_type", [ACCESS, REFRESH])
def test_a_token_round_trips_with_aware_utc_times(token_type: TokenType) -> None:
    codec = _codec()
    claims = _claims(token_type)
    decoded = codec.decode(codec.encode(claims), expected_type=token_type, now=NOW)
    assert decoded == claims
    assert decoded.type is token_type
    assert decoded.issued_at.tzinfo is UTC
    assert decoded.expires_at.tzinfo is UTC


def test_the_token_carries_the_documented_header_and_claims() -> None:
    token = _codec().encode(_claims(REFRESH))
    decoded = jwt.decode(token, KEY, algorithms=["HS256"])
    assert decoded.header == {"alg": "HS256", "typ": "JWT"}
    assert decoded.claims == _payload(token_type="refresh")


def test_times_are_truncated_to_whole_seconds() -> None:
    codec = _codec()
    issued_at = NOW + timedelta(microseconds=999_999)
    expires_at = NOW + timedelta(seconds=900, microseconds=500_000)
    token = codec.encode(_claims(issued_at=issued_at, expires_at=expires_at))
    decoded = codec.decode(token, expected_type=ACCESS, now=issued_at)
    assert decoded.issued_at == NOW
    assert decoded.expires_at == NOW + timedelta(seconds=900)
    assert jwt.decode(token, KEY).claims["iat"] == IAT


def test_times_in_another_zone_are_the_same_instants() -> None:
    paris = timezone(timedelta(hours=1))
    codec = _codec()
    claims = _claims(issued_at=NOW.astimezone(paris), expires_at=(NOW + timedelta(hours=1)))
    decoded = codec.decode(codec.encode(claims), expected_type=ACCESS, now=NOW)
    assert decoded.issued_at == NOW
    assert decoded.issued_at.tzinfo is UTC


@pytest.mark.parametrize(
    "claims",
    [
        _claims(issued_at=datetime(2026, 1, 1)),
        TokenClaims(ACCESS, 0, 7, "j", NOW, NOW + timedelta(hours=1)),
        TokenClaims(ACCESS, 42, -1, "j", NOW, NOW + timedelta(hours=1)),
        TokenClaims(ACCESS, 42, 7, "", NOW, NOW + timedelta(hours=1)),
        TokenClaims(ACCESS, 42, 7, "j" * 129, NOW, NOW + timedelta(hours=1)),
    ],
    ids=["naive-time", "user-0", "negative-session", "empty-jti", "long-jti"],
)
def test_encoding_claims_no_token_could_carry_is_a_bug(claims: TokenClaims) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        _codec().encode(claims)


def test_a_naive_now_is_a_bug_not_a_bad_token() -> None:
    codec = _codec()
    token = codec.encode(_claims())
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.decode(token, expected_type=ACCESS, now=datetime(2026, 1, 1))


@pytest.mark.parametrize("secret", ["", "x", "s" * 31])
def test_a_weak_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        JwtTokenCodec(secret_key=secret)
    JwtTokenCodec(secret_key=secret.ljust(32, "s"))  # long enough


# --- time --------------------------------------------------------------------


def test_a_token_is_good_until_the_second_it_expires() -> None:
    codec = _codec()
    token = codec.encode(_claims())
    expiry = NOW + timedelta(seconds=900)
    assert codec.decode(token, expected_type=ACCESS, now=expiry - timedelta(microseconds=1))
    _refused(token, now=expiry)
    _refused(token, now=expiry + timedelta(microseconds=1))
    _refused(token, now=expiry + timedelta(days=365))


def test_leeway_stretches_expiry_by_that_many_seconds() -> None:
    codec = _codec(leeway_seconds=30)
    token = codec.encode(_claims())
    expiry = NOW + timedelta(seconds=900)
    assert codec.decode(token, expected_type=ACCESS, now=expiry + timedelta(seconds=29))
    with pytest.raises(AuthenticationError):
        codec.decode(token, expected_type=ACCESS, now=expiry + timedelta(seconds=30))


def test_a_token_issued_in_the_future_is_refused() -> None:
    token = _sign(_payload(iat=IAT + 1))
    _refused(token)
    assert _codec(leeway_seconds=1).decode(token, expected_type=ACCESS, now=NOW)


# --- the type ----------------------------------------------------------------


@pytest.mark.parametrize(("issued", "expected"), [(REFRESH, ACCESS), (ACCESS, REFRESH)])
def test_a_token_of_the_other_type_is_refused(issued: TokenType, expected: TokenType) -> None:
    _refused(_codec().encode(_claims(issued)), expected_type=expected)


# --- the algorithm and the signature -----------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_an_unsigned_token_is_refused(alg: str) -> None:
    for signature in ("", _hs256("x", b"k")):
        _refused(f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(_payload())}.{signature}")
    _refused(f"{_b64json({'alg': alg})}.{_b64json(_payload())}.")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_another_hmac_with_the_same_key_is_refused(alg: str) -> None:
    _refused(_sign(_payload(), alg=alg))


def test_an_rs256_token_is_refused() -> None:
    rsa_key = RSAKey.generate_key(2048)
    _refused(jwt.encode({"alg": "RS256"}, _payload(), rsa_key, algorithms=["RS256"]))


def test_an_hmac_signature_under_another_algorithm_name_is_refused() -> None:
    # The key-confusion attack: a genuine HS256 MAC presented as RS256 or HS512.
    for alg in ("RS256", "HS512", "ES256"):
        signing_input = f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(_payload())}"
        _refused(f"{signing_input}.{_hs256(signing_input, derive_signing_key(SECRET))}")


def test_a_token_signed_with_another_key_is_refused() -> None:
    _refused(_sign(_payload(), key=OctKey.import_key(derive_signing_key(SECRET + "x"))))
    _refused(JwtTokenCodec(secret_key="another-secret-of-a-decent-length").encode(_claims()))


def test_the_raw_secret_is_not_the_signing_key() -> None:
    _refused(_sign(_payload(), key=OctKey.import_key(SECRET.encode())))


def test_the_signing_key_is_derived_from_the_secret_alone() -> None:
    assert derive_signing_key(SECRET) == derive_signing_key(SECRET)
    assert derive_signing_key(SECRET) != derive_signing_key(SECRET + " ")
    assert len(derive_signing_key("s" * 32)) == 32  # the hash's size, whatever the length
    assert len(derive_signing_key("s" * 500)) == 32


@pytest.mark.parametrize(
    "changes", [{"sub": "1"}, {"sid": 8}, {"exp": EXP + 3600}, {"token_type": "refresh"}]
)
def test_a_tampered_payload_is_refused(changes: dict[str, Any]) -> None:
    header, _, signature = _codec().encode(_claims()).split(".")
    _refused(f"{header}.{_b64json(_payload(**changes))}.{signature}")


@pytest.mark.parametrize(
    "header",
    [{"alg": "HS256"}, {"alg": "HS256", "typ": "JWT", "kid": "1"}, {"typ": "JWT", "alg": "HS256"}],
)
def test_a_tampered_header_is_refused(header: dict[str, str]) -> None:
    _, payload, signature = _codec().encode(_claims()).split(".")
    _refused(f"{_b64json(header)}.{payload}.{signature}")


def test_a_truncated_or_extended_signature_is_refused() -> None:
    token = _codec().encode(_claims())
    _refused(token[:-1])
    _refused(token + "A")
    _refused(token.rsplit(".", 1)[0] + ".")


# --- issuer, audience, and each claim ----------------------------------------


def test_another_issuer_or_audience_is_refused() -> None:
    _refused(_sign(_payload(iss="someone-else")))
    _refused(_sign(_payload(aud="someone-else")))
    _refused(_codec(issuer="other").encode(_claims()))
    _refused(_codec(audience="other").encode(_claims()))
    assert _codec(issuer="x", audience="y").decode(
        _codec(issuer="x", audience="y").encode(_claims()), expected_type=ACCESS, now=NOW
    )


def test_a_genuine_hand_built_token_is_accepted() -> None:
    # So that the tests below refuse their tokens for the one change they make.
    assert _codec().decode(_sign(_payload()), expected_type=ACCESS, now=NOW) == _claims()


@pytest.mark.parametrize("claim", sorted(_payload()))
def test_a_token_missing_any_claim_is_refused(claim: str) -> None:
    payload = _payload()
    del payload[claim]
    _refused(_sign(payload))
    _refused(_sign(_payload(**{claim: None})))


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 42),
        ("sub", "abc"),
        ("sub", ""),
        ("sub", "0"),
        ("sub", "-42"),
        ("sub", "042"),
        ("sub", "42.0"),
        ("sub", " 42"),
        ("sub", "4_2"),
        ("sub", "٤٢"),  # Arabic-Indic digits: int() would take them
        ("sub", str(2**63)),
        ("sub", "9" * 5000),
        ("sid", "7"),
        ("sid", True),
        ("sid", 0),
        ("sid", -7),
        ("sid", 7.0),
        ("sid", 2**63),
        ("jti", ""),
        ("jti", 5),
        ("jti", "j" * 129),
        ("jti", ["j"]),
        ("iat", float(IAT)),
        ("iat", str(IAT)),
        ("iat", True),
        ("iat", -1),
        ("exp", float(EXP)),
        ("exp", str(EXP)),
        ("exp", 10**30),
        ("token_type", "ACCESS"),
        ("token_type", "id"),
        ("token_type", ["access"]),
        ("iss", ["gemini-backend", "other"]),
        ("aud", 1),
    ],
)
def test_a_claim_of_the_wrong_type_or_range_is_refused(claim: str, value: object) -> None:
    _refused(_sign(_payload(**{claim: value})))


def test_the_longest_ids_and_jti_are_accepted() -> None:
    token = _sign(_payload(sub=str(2**63 - 1), sid=2**63 - 1, jti="j" * 128))
    claims = _codec().decode(token, expected_type=ACCESS, now=NOW)
    assert (claims.user_id, claims.session_id, claims.jti) == (2**63 - 1, 2**63 - 1, "j" * 128)


# --- garbage -----------------------------------------------------------------


def test_a_token_longer_than_the_limit_is_refused_even_if_genuine() -> None:
    fits = _sign(_payload(pad="p" * 2700))
    assert len(fits) <= MAX_TOKEN_LENGTH
    assert _codec().decode(fits, expected_type=ACCESS, now=NOW)
    too_long = _sign(_payload(pad="p" * 3000))
    assert len(too_long) > MAX_TOKEN_LENGTH
    _refused(too_long)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "...",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "not a token",
        "Bearer x.y.z",
        "€.€.€",
        "\x00",
        "=.=.=",
        f"{_b64json(['alg'])}.{_b64json({})}.",  # a header that is JSON but not an object
        f"{_b64json('alg')}.{_b64json({})}.",
        f"{_b64json(['crit', 'alg'])}.{_b64json({})}.",
        f"{_b64json({'alg': 'HS256', 'crit': ['b64']})}.{_b64json({})}.",
        f"{_b64json({'alg': 'HS256', 'b64': False, 'crit': ['b64']})}.payload.sig",
        f"{_b64json({'alg': ['HS256']})}.{_b64json({})}.",
        f"{_b64json({'alg': None})}.{_b64json({})}.",
        f"{_b64json({'alg': 'HS256', 'enc': 'A128GCM'})}.{_b64json({})}.",
        f"{_b64(b'{bad json')}.{_b64json({})}.",
        f"{_b64(bytes(range(256)))}.{_b64json({})}.",
        "a" * (MAX_TOKEN_LENGTH + 1),
        "e30." * 5000,
    ],
)
def test_garbage_is_refused(token: str) -> None:
    _refused(token)


@pytest.mark.parametrize("token", [None, b"x.y.z", 42, ["x"], {"token": "x"}])
def test_something_other_than_a_string_is_refused(token: object) -> None:
    _refused(token)


def test_a_valid_token_with_surrounding_noise_is_refused() -> None:
    token = _codec().encode(_claims())
    for noisy in (
        f" {token}",
        f"{token}\n",
        f"Bearer {token}",
        f"{token}.",
        token.replace(".", "..", 1),
    ):
        _refused(noisy)


def test_a_payload_that_is_not_an_object_is_refused_even_when_signed() -> None:
    header = _b64json({"alg": "HS256", "typ": "JWT"})
    for payload in ("[]", '"x"', "1", "null", "{bad"):
        signing_input = f"{header}.{_b64(payload.encode())}"
        _refused(f"{signing_input}.{_hs256(signing_input, derive_signing_key(SECRET))}")


def test_library_failures_are_chained() -> None:
    with pytest.raises(AuthenticationError) as caught:
        _codec().decode("a.b.c", expected_type=ACCESS, now=NOW)
    assert caught.value.__cause__ is not None


# --- properties --------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
_header = st.one_of(
    _json,
    st.fixed_dictionaries({"alg": st.sampled_from(["HS256", "none", "HS512", "RS256"])}).flatmap(
        lambda base: st.dictionaries(st.text(max_size=5), _json, max_size=3).map(
            lambda extra: {**extra, **base}
        )
    ),
)
_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


@given(st.text())
def test_arbitrary_text_raises_nothing_but_authentication_error(token: str) -> None:
    _refused(token)


@given(
    st.one_of(
        st.tuples(_header, _json, _segment).map(
            lambda t: f"{_b64json(t[0])}.{_b64json(t[1])}.{t[2]}"
        ),
        st.tuples(_segment, _segment, _segment).map(".".join),
        st.lists(_segment, max_size=6).map(".".join),
    )
)
def test_arbitrary_token_shaped_strings_are_refused(token: str) -> None:
    _refused(token)


@given(st.tuples(_header, _json).map(lambda t: f"{_b64json(t[0])}.{_b64json(t[1])}"))
def test_arbitrary_headers_and_payloads_signed_with_the_key_raise_only_authentication_error(
    signing_input: str,
) -> None:
    token = f"{signing_input}.{_hs256(signing_input, derive_signing_key(SECRET))}"
    with pytest.raises(AuthenticationError):
        _codec().decode(token, expected_type=ACCESS, now=NOW)


_aware_times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9000, 1, 1),
    timezones=st.just(UTC)
    | st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    ),
)


@given(
    token_type=st.sampled_from(TokenType),
    user_id=st.integers(min_value=1, max_value=2**63 - 1),
    session_id=st.integers(min_value=1, max_value=2**63 - 1),
    jti=st.text(min_size=1, max_size=128),
    issued_at=_aware_times,
    lifetime=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400)),
)
def test_arbitrary_valid_claims_round_trip(
    token_type: TokenType,
    user_id: int,
    session_id: int,
    jti: str,
    issued_at: datetime,
    lifetime: timedelta,
) -> None:
    codec = _codec()
    claims = TokenClaims(token_type, user_id, session_id, jti, issued_at, issued_at + lifetime)
    decoded = codec.decode(codec.encode(claims), expected_type=token_type, now=issued_at)

    def whole_seconds(moment: datetime) -> datetime:
        return moment.astimezone(UTC).replace(microsecond=0)

    assert decoded == TokenClaims(
        token_type,
        user_id,
        session_id,
        jti,
        whole_seconds(issued_at),
        whole_seconds(issued_at + lifetime),
    )
    assert decoded.issued_at.tzinfo is UTC
    other = REFRESH if token_type is ACCESS else ACCESS
    with pytest.raises(AuthenticationError):
        codec.decode(codec.encode(claims), expected_type=other, now=issued_at)
