from __future__ import annotations

import re
import string
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_core.errors import InvalidInputError
from gemini_core.validation import (
    NAME_PATTERN,
    NOT_BLANK_PATTERN,
    USERNAME_PATTERN,
    check_username,
    clean_full_name,
    normalize_email,
)

USERNAME_CHARS = string.ascii_letters + string.digits + "_.-"


@given(st.text(alphabet=USERNAME_CHARS, min_size=3, max_size=32))
def test_any_username_of_the_allowed_characters_and_length_passes(username: str) -> None:
    assert check_username(username) == username


@given(st.text(max_size=40))
def test_any_other_username_is_refused_naming_the_field(username: str) -> None:
    allowed = re.fullmatch(r"[A-Za-z0-9_.\-]{3,32}", username) is not None
    try:
        check_username(username, field="user_data.username")
    except InvalidInputError as exc:
        refused_field = exc.field
    else:
        refused_field = None
    assert (refused_field is None) == allowed
    if not allowed:
        assert refused_field == "user_data.username"


@pytest.mark.parametrize("name", ["ab", "a" * 33, "ann smith", "ann@x", "änn", "ann\n"])
def test_examples_of_refused_usernames(name: str) -> None:
    with pytest.raises(InvalidInputError):
        check_username(name)


local_parts = st.from_regex(r"[A-Za-z0-9_+-]{1,30}(\.[A-Za-z0-9_+-]{1,30})?", fullmatch=True)
domains = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?(\.[a-z0-9]{1,20}){0,2}\.[a-z]{2,10}", fullmatch=True
)


@given(local_parts, domains)
def test_ordinary_addresses_pass_lower_cased(local: str, domain: str) -> None:
    email = f"  {local}@{domain.upper()} "
    assert normalize_email(email) == f"{local}@{domain}".lower()


@given(st.text(max_size=300))
def test_any_text_is_an_address_or_a_refusal_naming_the_field(text: str) -> None:
    try:
        cleaned = normalize_email(text)
    except InvalidInputError as exc:
        cleaned, field = "", exc.field
    else:
        field = "email"
    assert field == "email"
    if not cleaned:
        return
    assert cleaned == cleaned.strip().lower()
    assert cleaned.count("@") == 1
    assert len(cleaned) <= 254
    assert not any(ch.isspace() for ch in cleaned)
    assert cleaned.partition("@")[2].isascii()  # the domain is IDNA-encoded
    assert normalize_email(cleaned) == cleaned  # normalising twice changes nothing


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "a@b",
        "a@@b.io",
        "a b@c.io",
        "@b.io",
        "a@b.",
        f"{'a' * 65}@b.io",
        "a@b.c\x00",
        "a..b@c.io",
        ".a@c.io",
        "a.@c.io",
        "a@-b.io",
        "a@b-.io",
        "a@b..io",
        "a@1.2.3.4",
        "an\u200bn@example.com",  # zero-width space
        "ann@exa\u200bmple.com",
        "ann\u202e@example.com",  # right-to-left override
        "ann\u00a0@example.com",  # no-break space
        "ann@example.c\u00f6m.",
        "\u00e9" * 33 + "@b.io",  # 66 bytes of UTF-8
    ],
)
def test_examples_of_refused_addresses(email: str) -> None:
    with pytest.raises(InvalidInputError):
        normalize_email(email)


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("Ann@B\u00fccher.Example", "ann@xn--bcher-kva.example"),
        ("ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "ann@example.com"),
        ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
        ("Jos\u00e9@example.com", "jos\u00e9@example.com"),  # the mail server decides
        ("o'neil+tag@mail.co.uk", "o'neil+tag@mail.co.uk"),
    ],
)
def test_international_addresses_are_kept_in_the_form_that_is_mailed(
    email: str, expected: str
) -> None:
    assert normalize_email(email) == expected


@given(st.text(max_size=150))
def test_full_names_are_trimmed_bounded_and_printable(name: str) -> None:
    try:
        cleaned = clean_full_name(name)
    except InvalidInputError as exc:
        cleaned, field = None, exc.field
    else:
        field = "full_name"
    assert field == "full_name"
    if cleaned is not None:
        assert cleaned == cleaned.strip()
        assert len(cleaned) <= 100
        assert "  " not in cleaned
        assert all(ord(ch) >= 32 and ord(ch) != 127 for ch in cleaned)


def test_a_blank_full_name_is_none() -> None:
    assert clean_full_name("   ") is None
    assert clean_full_name(None) is None


def test_the_stated_patterns_agree_with_the_core_for_every_character() -> None:
    """The OpenAPI document states these rules as patterns; the core enforces them.
    Checked on every code point, the two agree."""
    not_blank = re.compile(NOT_BLANK_PATTERN)
    name = re.compile(NAME_PATTERN)
    for point in range(sys.maxunicode + 1):
        ch = chr(point)
        assert (not_blank.search(ch) is None) == (not ch.strip()), hex(point)
        try:
            clean_full_name(f"a{ch}b")
            accepted = True
        except InvalidInputError:
            accepted = False
        if 0xD800 <= point <= 0xDFFF:
            continue  # lone surrogates never arrive in decoded JSON text
        assert (name.fullmatch(f"a{ch}b") is not None) == accepted, hex(point)


def test_the_stated_username_pattern_is_the_core_rule() -> None:
    pattern = re.compile(USERNAME_PATTERN)
    for candidate in ("ab", "abc", "a" * 32, "a" * 33, "a.b-c_d", "a b", "ä" * 5, "abc\n"):
        try:
            check_username(candidate)
            accepted = True
        except InvalidInputError:
            accepted = False
        assert (pattern.fullmatch(candidate) is not None) == accepted, candidate
