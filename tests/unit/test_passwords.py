from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import argon2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.memory import FastPasswordHasher
from adapters.passwords import Argon2PasswordHasher
from gemini_core.errors import InvalidInputError
from gemini_core.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    check_password,
    common_passwords,
    password_problem,
)

# --- policy ---------------------------------------------------------------------

UNCOMMON = "correct horse battery staple, said the tired orange giraffe! " * 3


def test_the_limits_are_the_spec() -> None:
    assert (MIN_LENGTH, MAX_LENGTH) == (8, 128)


@pytest.mark.parametrize(
    ("length", "ok"), [(0, False), (7, False), (8, True), (128, True), (129, False)]
)
def test_length_boundaries(length: int, ok: bool) -> None:
    assert (password_problem(UNCOMMON[:length]) is None) is ok


@pytest.mark.parametrize(("length", "ok"), [(7, False), (8, True), (128, True), (129, False)])
def test_length_counts_characters_not_bytes(length: int, ok: bool) -> None:
    password = "🦊" * length  # four bytes each in UTF-8
    assert (password_problem(password) is None) is ok


def test_length_problems_say_what_the_limit_is() -> None:
    assert password_problem("x7#") == "Password must be at least 8 characters long."
    assert password_problem("x" * 129) == "Password must be at most 128 characters long."


def test_a_short_common_password_is_reported_as_too_short() -> None:
    problem = password_problem("123456")
    assert problem is not None
    assert "at least 8" in problem


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "Password",
        "PASSWORD",
        "123456789",
        "qwerty123",
        "Password1",
        "iloveyou",
        "FootBall",
        "trustno1",
    ],
)
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert password_problem(password) == (
        "This password is too common; choose a less predictable one."
    )


def test_only_exact_matches_of_the_list_are_common() -> None:
    assert "password1" in common_passwords()
    assert password_problem("password1 is not it") is None


def test_the_list_holds_the_common_passwords_the_length_rule_lets_through() -> None:
    passwords = common_passwords()
    assert len(passwords) == 8_354
    assert all(len(p) >= 8 for p in passwords)
    assert all(p == p.lower() and p == p.strip() and p for p in passwords)
    assert common_passwords() is passwords  # loaded once


def test_the_users_own_email_or_username_is_refused() -> None:
    inputs = ["Alice.Smith@Example.com", "alice.smith", "AliceSmith99"]
    for password in ["alice.smith@example.com", "ALICE.SMITH", "alicesmith99"]:
        assert password_problem(password, user_inputs=inputs) == (
            "Password must not be the same as your email or username."
        )
    assert password_problem("alice.smith!", user_inputs=inputs) is None


def test_user_inputs_may_be_any_iterable() -> None:
    assert password_problem("bobby-tables", user_inputs=iter(["Bobby-Tables"])) is not None


def test_check_password_raises_on_the_named_field() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_password("qwerty123", field="new_password")
    assert caught.value.field == "new_password"
    assert caught.value.detail == password_problem("qwerty123")


def test_check_password_names_the_password_field_by_default() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_password("short")
    assert caught.value.field == "password"
    check_password(UNCOMMON[:40])


@given(
    password=st.text(min_size=MIN_LENGTH, max_size=MAX_LENGTH),
    user_inputs=st.lists(st.text(max_size=40), max_size=3),
)
def test_any_uncommon_password_of_allowed_length_passes(
    password: str, user_inputs: list[str]
) -> None:
    assume(password.lower() not in common_passwords())
    assume(all(password.casefold() != value.casefold() for value in user_inputs))
    assert password_problem(password, user_inputs=user_inputs) is None
    check_password(password, user_inputs=user_inputs)


@given(
    password=st.one_of(
        st.text(max_size=MIN_LENGTH - 1), st.text(min_size=MAX_LENGTH + 1, max_size=300)
    ),
    field=st.text(min_size=1, max_size=20),
)
def test_any_password_of_another_length_fails_on_the_given_field(password: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_password(password, field=field)
    assert caught.value.field == field


# --- hasher ---------------------------------------------------------------------


@pytest.fixture
def hasher() -> Iterator[FastPasswordHasher]:
    hasher = FastPasswordHasher()
    yield hasher
    hasher.close()


async def test_a_hash_verifies_its_password_only(hasher: FastPasswordHasher) -> None:
    password_hash = await hasher.hash("s3cret passphrase")
    assert password_hash.startswith("$argon2id$")
    assert await hasher.verify(password_hash, "s3cret passphrase")
    assert not await hasher.verify(password_hash, "s3cret passphrasE")
    assert not await hasher.verify(password_hash, "")


async def test_non_ascii_passwords_round_trip(hasher: FastPasswordHasher) -> None:
    password_hash = await hasher.hash("🦊 pâssword ünïcode")
    assert await hasher.verify(password_hash, "🦊 pâssword ünïcode")
    assert not await hasher.verify(password_hash, "🦊 password unicode")


async def test_hashes_are_salted(hasher: FastPasswordHasher) -> None:
    first, second = await hasher.hash("same password"), await hasher.hash("same password")
    assert first != second
    assert await hasher.verify(first, "same password")
    assert await hasher.verify(second, "same password")


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not a hash",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",  # truncated
        "$argon2id$v=19$m=abc,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        "$argon2x$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=8,t=1,p=1$sälz$hash",  # not ASCII
    ],
)
async def test_a_malformed_hash_verifies_nothing_and_needs_no_rehash(
    hasher: FastPasswordHasher, malformed: str
) -> None:
    assert await hasher.verify(malformed, "anything at all") is False
    assert hasher.needs_rehash(malformed) is False


async def test_needs_rehash_when_the_parameters_differ(hasher: FastPasswordHasher) -> None:
    current = await hasher.hash("a password")
    assert not hasher.needs_rehash(current)

    other_cost = argon2.PasswordHasher(time_cost=2, memory_cost=8, parallelism=1)
    older = other_cost.hash("a password")
    assert hasher.needs_rehash(older)
    assert await hasher.verify(older, "a password")  # the hash carries its own parameters

    other_type = argon2.PasswordHasher(
        time_cost=1, memory_cost=8, parallelism=1, type=argon2.Type.I
    ).hash("a password")
    assert hasher.needs_rehash(other_type)
    assert await hasher.verify(other_type, "a password")


async def test_the_real_defaults() -> None:
    hasher = Argon2PasswordHasher()
    try:
        password_hash = await hasher.hash("a real password")
        assert password_hash.startswith("$argon2id$v=19$m=24576,t=3,p=1$")
        assert await hasher.verify(password_hash, "a real password")
        assert not await hasher.verify(password_hash, "a wrong password")
        assert not hasher.needs_rehash(password_hash)
        assert FastPasswordHasher().needs_rehash(password_hash)
    finally:
        hasher.close()


@pytest.mark.parametrize("operation", ["hash", "verify"])
async def test_the_event_loop_keeps_running_while_argon2_works(
    hasher: FastPasswordHasher, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    # argon2 is held at work until this coroutine has had a turn on the loop,
    # so the turn comes while the work is surely in flight. A loop that the
    # work blocks (run on the loop, or waited for there) cannot give that
    # turn: the hold gives up, the work ends, and only then does the turn come.
    loop = asyncio.get_running_loop()
    started, released = asyncio.Event(), threading.Event()
    unheld = getattr(argon2.PasswordHasher, operation)

    def held(self: argon2.PasswordHasher, *args: Any, **kwargs: Any) -> Any:
        loop.call_soon_threadsafe(started.set)
        released.wait(timeout=10)  # runs out only while the loop is blocked
        return unheld(self, *args, **kwargs)

    password_hash = await hasher.hash("a password")
    monkeypatch.setattr(argon2.PasswordHasher, operation, held)
    if operation == "hash":
        work = asyncio.ensure_future(hasher.hash("a password"))
    else:
        work = asyncio.ensure_future(hasher.verify(password_hash, "a password"))
    try:
        await started.wait()
        assert not work.done(), "the event loop waited for argon2"
    finally:
        released.set()
    result = await work
    if operation == "verify":
        assert result is True
    else:
        assert str(result).startswith("$argon2id$")


async def test_a_password_matches_however_its_accents_were_composed() -> None:
    hasher = FastPasswordHasher()
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    assert composed != decomposed
    assert await hasher.verify(await hasher.hash(composed), decomposed)
    hasher.close()
