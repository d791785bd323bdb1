"""The /auth routes over HTTP, on PostgreSQL, with codes read from mail
delivered to a real SMTP server."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from gemini_core.entities import OtpPurpose, UserChanges
from web.app import create_app
from web.settings import load_settings

from .api import PASSWORD, Api, assert_problem, settings_env
from .server import running_server
from .smtp import SmtpServer

# --- sign-up -------------------------------------------------------------------


async def test_sign_up_with_a_mailed_code_then_sign_in(api: Api) -> None:
    pair = await api.register("Ann@Example.com", "ann")
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 15 * 60
    user = pair["user"]
    assert user["email"] == "ann@example.com"
    assert (user["username"], user["full_name"]) == ("ann", "Ann Example")
    assert (user["is_active"], user["is_verified"], user["is_admin"]) == (True, True, False)
    assert user["last_login_at"] is None
    assert (user["daily_token_quota"], user["daily_message_quota"]) == (None, None)
    assert set(user) == {
        "id",
        "email",
        "username",
        "full_name",
        "is_active",
        "is_verified",
        "is_admin",
        "created_at",
        "last_login_at",
        "daily_token_quota",
        "daily_message_quota",
    }

    me = await api.get("/auth/me", pair["access_token"])
    assert me.status_code == 200
    assert me.json() == user

    login = await api.login("ANN@example.com")
    assert login.status_code == 200
    assert login.json()["user"]["last_login_at"] is not None

    mail = api.smtp.mails_to("ann@example.com")[-1]
    assert mail.mail_from == "codes@gemini.test"
    assert api.smtp.code_for("ann@example.com") not in mail.message["Subject"]


async def test_the_code_mail_is_answered_the_same_whether_or_not_an_account_exists(
    api: Api,
) -> None:
    await api.register("ann@example.com", "ann")
    answers = []
    for email in ("ann@example.com", "nobody@example.com"):
        for purpose in ("email_verification", "password_reset"):
            response = await api.client.post(
                "/auth/send-otp", json={"email": email, "purpose": purpose}
            )
            answers.append((response.status_code, response.json()))
    assert all(answer == (202, answers[0][1]) for answer in answers)
    assert answers[0][1]["expires_in"] == 600


async def test_register_refuses_bad_input_without_spending_the_code(api: Api) -> None:
    code = await api.send_code("ann@example.com")

    async def register(**changes: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "email": "ann@example.com",
            "otp_code": code,
            "user_data": {"email": "ann@example.com", "username": "ann", "password": PASSWORD},
        }
        for key, value in changes.items():
            if key in body:
                body[key] = value
            else:
                body["user_data"][key] = value
        return await api.client.post("/auth/register", json=body)

    cases = {
        "user_data.email": {"email": "other@example.com"},
        "user_data.username": {"username": "a b"},
        "user_data.password": {"password": "short"},
    }
    for field, changes in cases.items():
        body = assert_problem(await register(**changes), 422)
        assert [e["field"] for e in body["errors"]] == [field]
    assert_problem(await register(password="password123"), 422)  # a common one
    missing = await api.client.post("/auth/register", json={"email": "ann@example.com"})
    assert_problem(missing, 422)
    # None of that spent the code:
    created = await register(is_admin=True, is_active=False, is_verified=False)
    assert created.status_code == 201
    assert (created.json()["user"]["is_admin"], created.json()["user"]["is_active"]) == (
        False,
        True,
    )
    assert_problem(await register(), 400)  # now it is spent


async def test_taken_email_or_username_is_a_conflict(api: Api) -> None:
    await api.register("ann@example.com", "ann")
    code = await api.send_code("ANN@example.com")
    body = {
        "email": "ANN@example.com",
        "otp_code": code,
        "user_data": {"email": "ann@EXAMPLE.com", "username": "ann2", "password": PASSWORD},
    }
    assert_problem(await api.client.post("/auth/register", json=body), 409)
    code = await api.send_code("bob@example.com")
    body = {
        "email": "bob@example.com",
        "otp_code": code,
        "user_data": {"email": "bob@example.com", "username": "ANN", "password": PASSWORD},
    }
    assert_problem(await api.client.post("/auth/register", json=body), 409)


async def test_a_wrong_code_is_a_generic_400_and_five_wrong_tries_kill_the_code(api: Api) -> None:
    code = await api.send_code("ann@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    body = {
        "email": "ann@example.com",
        "otp_code": wrong,
        "user_data": {"email": "ann@example.com", "username": "ann", "password": PASSWORD},
    }
    details = set()
    for _ in range(5):
        details.add(
            assert_problem(await api.client.post("/auth/register", json=body), 400)["detail"]
        )
    assert len(details) == 1
    body["otp_code"] = code
    refused = assert_problem(await api.client.post("/auth/register", json=body), 400)
    assert refused["detail"] in details


async def test_concurrent_guesses_are_all_counted(api: Api) -> None:
    code = await api.send_code("ann@example.com")
    guesses = [f"{n:06d}" for n in range(21) if f"{n:06d}" != code][:20]

    async def attempt(guess: str) -> int:
        body = {
            "email": "ann@example.com",
            "otp_code": guess,
            "user_data": {"email": "ann@example.com", "username": "ann", "password": PASSWORD},
        }
        return (await api.client.post("/auth/register", json=body)).status_code

    assert await asyncio.gather(*(attempt(g) for g in guesses)) == [400] * 20
    otp = await api.repos.otps.latest("ann@example.com", OtpPurpose.EMAIL_VERIFICATION)
    assert otp.attempts == 20  # no try was lost to a race
    assert await attempt(code) == 400


async def test_codes_have_a_cooldown_and_an_hourly_cap(
    tmp_path: Path,
    database_url: str,
    smtp_server: SmtpServer,
) -> None:
    env = settings_env(tmp_path, database_url, smtp_server, OTP_RESEND_COOLDOWN_SECONDS="60")
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        send = {"email": "ann@example.com", "purpose": "email_verification"}
        assert (await client.post("/auth/send-otp", json=send)).status_code == 202
        again = await client.post("/auth/send-otp", json=send)
        assert_problem(again, 429)
        assert 55 <= int(again.headers["retry-after"]) <= 60
    env.update(OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_PER_HOUR="3")
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        send = {"email": "bob@example.com", "purpose": "password_reset"}
        for _ in range(3):
            assert (await client.post("/auth/send-otp", json=send)).status_code == 202
        capped = await client.post("/auth/send-otp", json=send)
        assert_problem(capped, 429)
        assert 3500 <= int(capped.headers["retry-after"]) <= 3600
        # The cap counts codes of both purposes for one address.
        other = {"email": "bob@example.com", "purpose": "email_verification"}
        assert_problem(await client.post("/auth/send-otp", json=other), 429)


async def test_send_otp_validates_its_input(api: Api) -> None:
    bad = [
        {"email": "not-an-email", "purpose": "email_verification"},
        {"email": "ann@example.com", "purpose": "admin"},
        {"email": "ann@example.com"},
    ]
    for body in bad:
        assert_problem(await api.client.post("/auth/send-otp", json=body), 422)
    assert_problem(
        await api.client.post(
            "/auth/send-otp", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
    )


async def test_mail_server_down_is_a_503_and_no_code_is_usable(api: Api) -> None:
    api.smtp.refuse = True
    response = await api.client.post(
        "/auth/send-otp", json={"email": "ann@example.com", "purpose": "email_verification"}
    )
    assert_problem(response, 503)
    latest = await api.repos.otps.latest("ann@example.com", OtpPurpose.EMAIL_VERIFICATION)
    assert latest is None
    api.smtp.refuse = False
    assert await api.send_code("ann@example.com")


# --- sign-in -------------------------------------------------------------------


async def test_login_does_not_reveal_who_has_an_account(api: Api) -> None:
    await api.register("ann@example.com", "ann")
    unknown = await api.login("nobody@example.com")
    wrong = await api.login("ann@example.com", "wrong password!")
    assert_problem(unknown, 401)
    assert (unknown.status_code, unknown.json()) == (wrong.status_code, wrong.json())
    assert unknown.headers["www-authenticate"] == "Bearer"


async def test_a_deactivated_or_deleted_account_cannot_sign_in_or_use_its_tokens(api: Api) -> None:
    pair = await api.register("ann@example.com", "ann")
    users = api.repos.users
    user_id = pair["user"]["id"]
    await users.update(user_id, UserChanges(is_active=False))
    assert_problem(await api.get("/auth/me", pair["access_token"]), 401)
    assert_problem(await api.refresh(pair["refresh_token"]), 401)
    assert_problem(await api.login("ann@example.com", "wrong password!"), 401)
    assert_problem(await api.login("ann@example.com"), 403)
    await users.update(user_id, UserChanges(is_active=True))
    fresh = (await api.login("ann@example.com")).json()
    await users.update(user_id, UserChanges(deleted_at=datetime.now(UTC)))
    assert_problem(await api.get("/auth/me", fresh["access_token"]), 401)
    assert_problem(await api.login("ann@example.com"), 403)


# --- tokens and sessions -----------------------------------------------------------


async def test_refresh_rotates_and_a_replayed_token_revokes_the_session(api: Api) -> None:
    first = await api.register("ann@example.com", "ann")
    second_response = await api.refresh(first["refresh_token"])
    assert second_response.status_code == 200
    second = second_response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await api.get("/auth/me", second["access_token"])).status_code == 200

    assert_problem(await api.refresh(first["refresh_token"]), 401)  # replayed
    # ... and the whole session is gone: the newest tokens stop working too.
    assert_problem(await api.refresh(second["refresh_token"]), 401)
    assert_problem(await api.get("/auth/me", second["access_token"]), 401)
    assert_problem(await api.get("/auth/me", first["access_token"]), 401)


async def test_logout_ends_that_session_only(api: Api) -> None:
    one = await api.register("ann@example.com", "ann")
    two = (await api.login("ann@example.com")).json()
    response = await api.post("/auth/logout", one["access_token"])
    assert response.status_code == 204
    assert_problem(await api.get("/auth/me", one["access_token"]), 401)
    assert_problem(await api.refresh(one["refresh_token"]), 401)
    assert (await api.get("/auth/me", two["access_token"])).status_code == 200
    assert_problem(await api.client.post("/auth/logout"), 401)


async def test_sessions_are_listed_and_can_be_revoked(api: Api) -> None:
    one = await api.register("ann@example.com", "ann")
    two = (
        await api.client.post(
            "/auth/login",
            json={"email": "ann@example.com", "password": PASSWORD},
            headers={"User-Agent": "phone/1.0"},
        )
    ).json()
    listed = await api.get("/auth/sessions", one["access_token"])
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 2
    assert set(items[0]) == {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
    assert [i["current"] for i in items] == [False, True]
    assert items[0]["user_agent"] == "phone/1.0"

    bob = await api.register("bob@example.com", "bob")
    revoke_as_bob = await api.client.delete(
        f"/auth/sessions/{items[0]['id']}",
        headers={"Authorization": f"Bearer {bob['access_token']}"},
    )
    assert_problem(revoke_as_bob, 404)
    revoked = await api.client.delete(
        f"/auth/sessions/{items[0]['id']}",
        headers={"Authorization": f"Bearer {one['access_token']}"},
    )
    assert revoked.status_code == 204
    assert_problem(await api.get("/auth/me", two["access_token"]), 401)
    assert_problem(await api.refresh(two["refresh_token"]), 401)
    again = await api.client.delete(
        f"/auth/sessions/{items[0]['id']}",
        headers={"Authorization": f"Bearer {one['access_token']}"},
    )
    assert_problem(again, 404)


async def test_change_password_keeps_this_session_and_ends_the_others(api: Api) -> None:
    one = await api.register("ann@example.com", "ann")
    two = (await api.login("ann@example.com")).json()
    wrong = await api.post(
        "/auth/change-password",
        one["access_token"],
        {"current_password": "not it at all", "new_password": "a new long passphrase"},
    )
    assert_problem(wrong, 400)
    weak = await api.post(
        "/auth/change-password",
        one["access_token"],
        {"current_password": PASSWORD, "new_password": "short"},
    )
    assert assert_problem(weak, 422)["errors"][0]["field"] == "new_password"
    changed = await api.post(
        "/auth/change-password",
        one["access_token"],
        {"current_password": PASSWORD, "new_password": "a new long passphrase"},
    )
    assert changed.status_code == 204
    assert (await api.get("/auth/me", one["access_token"])).status_code == 200
    assert_problem(await api.get("/auth/me", two["access_token"]), 401)
    assert_problem(await api.login("ann@example.com"), 401)
    assert (await api.login("ann@example.com", "a new long passphrase")).status_code == 200


async def test_reset_password_by_code_ends_every_session(api: Api) -> None:
    one = await api.register("ann@example.com", "ann")
    code = await api.send_code("ann@example.com", "password_reset")
    body = {"email": "ann@example.com", "otp_code": code, "new_password": "brand new passphrase"}
    weak = await api.client.post("/auth/reset-password", json={**body, "new_password": "1234"})
    assert_problem(weak, 422)
    # A verification code is not a reset code.
    verification = await api.send_code("ann@example.com")
    wrong_purpose = {**body, "otp_code": verification}
    if verification != code:
        assert_problem(await api.client.post("/auth/reset-password", json=wrong_purpose), 400)
    response = await api.client.post("/auth/reset-password", json=body)
    assert response.status_code == 204
    assert_problem(await api.get("/auth/me", one["access_token"]), 401)
    assert_problem(await api.refresh(one["refresh_token"]), 401)
    assert_problem(await api.login("ann@example.com"), 401)
    assert (await api.login("ann@example.com", "brand new passphrase")).status_code == 200
    assert_problem(await api.client.post("/auth/reset-password", json=body), 400)  # spent


async def test_reset_for_an_unknown_email_is_the_generic_400(api: Api) -> None:
    code = await api.send_code("nobody@example.com", "password_reset")
    body = {"email": "nobody@example.com", "otp_code": code, "new_password": "brand new passphrase"}
    assert_problem(await api.client.post("/auth/reset-password", json=body), 400)


async def test_profile_can_be_changed(api: Api) -> None:
    ann = await api.register("ann@example.com", "ann")
    await api.register("bob@example.com", "bob")
    headers = {"Authorization": f"Bearer {ann['access_token']}"}
    changed = await api.client.patch("/auth/me", json={"full_name": "  Ann  B. "}, headers=headers)
    assert changed.status_code == 200
    assert (changed.json()["full_name"], changed.json()["username"]) == ("Ann B.", "ann")
    renamed = await api.client.patch("/auth/me", json={"username": "ann.b"}, headers=headers)
    assert renamed.json()["username"] == "ann.b"
    cleared = await api.client.patch("/auth/me", json={"full_name": None}, headers=headers)
    assert cleared.json()["full_name"] is None
    assert_problem(
        await api.client.patch("/auth/me", json={"username": "BOB"}, headers=headers), 409
    )
    assert_problem(await api.client.patch("/auth/me", json={"username": "x"}, headers=headers), 422)
    # Flags are not the user's to set.
    flags = await api.client.patch("/auth/me", json={"is_admin": True}, headers=headers)
    assert flags.json()["is_admin"] is False


# --- forged tokens ----------------------------------------------------------------


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_forged_and_tampered_tokens_are_refused(api: Api) -> None:
    pair = await api.register("ann@example.com", "ann")
    access = pair["access_token"]
    header, payload, signature = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    tampered = f"{header}.{_b64({**claims, 'sub': str(int(claims['sub']) + 1)})}.{signature}"
    from joserfc import jwt
    from joserfc.jwk import OctKey

    other_key = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("x" * 64))
    for forged in (unsigned, tampered, other_key, pair["refresh_token"], "garbage", ""):
        response = await api.get("/auth/me", forged)
        assert_problem(response, 401)
    assert_problem(await api.client.get("/auth/me"), 401)
    assert_problem(
        await api.client.get("/auth/me", headers={"Authorization": f"Basic {access}"}), 401
    )
    # An access token is not a refresh token either.
    assert_problem(await api.refresh(access), 401)


# --- the first admin ---------------------------------------------------------------


async def test_the_first_admin_comes_from_the_environment_once(
    tmp_path: Path,
    database_url: str,
    smtp_server: SmtpServer,
) -> None:
    env = settings_env(
        tmp_path,
        database_url,
        smtp_server,
        ADMIN_EMAIL="Root@Example.com",
        ADMIN_PASSWORD="an admin passphrase",
    )
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        login = await client.post(
            "/auth/login", json={"email": "root@example.com", "password": "an admin passphrase"}
        )
        assert login.status_code == 200
        admin = login.json()
        assert (admin["user"]["is_admin"], admin["user"]["is_verified"]) == (True, True)
        changed = await client.post(
            "/auth/change-password",
            json={"current_password": "an admin passphrase", "new_password": "rotated passphrase"},
            headers={"Authorization": f"Bearer {admin['access_token']}"},
        )
        assert changed.status_code == 204
    # A restart with the same environment leaves the existing admin alone.
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        old = await client.post(
            "/auth/login", json={"email": "root@example.com", "password": "an admin passphrase"}
        )
        assert_problem(old, 401)
        new = await client.post(
            "/auth/login", json={"email": "root@example.com", "password": "rotated passphrase"}
        )
        assert new.status_code == 200


# --- code issuing under concurrency, on the real server ----------------------------


async def _send_codes_at_once(base: str, bodies: list[dict[str, str]]) -> list[int]:
    """Every body to /auth/send-otp at the same moment, each on its own connection."""
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        # Open the connections first, so the sends are not spread out by handshakes.
        await asyncio.gather(*(client.get("/health") for _ in bodies))
        responses = await asyncio.gather(*(client.post("/auth/send-otp", json=b) for b in bodies))
    return [response.status_code for response in responses]


def test_racing_code_requests_for_one_address_get_one_code(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """Thirty requests for one address, of both purposes and any letter case, at
    once across two workers: the cooldown lets exactly one through."""
    env = settings_env(
        tmp_path, database_url, smtp_server, WORKERS="2", OTP_RESEND_COOLDOWN_SECONDS="60"
    )
    with running_server(tmp_path, **env) as (_, base):
        bodies = [
            {
                "email": "ann@example.com" if n % 2 else "ANN@Example.com",
                "purpose": "password_reset" if n % 3 else "email_verification",
            }
            for n in range(30)
        ]
        statuses = asyncio.run(_send_codes_at_once(base, bodies))
        assert sorted(statuses) == [202] + [429] * 29
    assert len(smtp_server.mails_to("ann@example.com")) == 1


def test_racing_code_requests_stop_at_the_hourly_cap(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    env = settings_env(tmp_path, database_url, smtp_server, WORKERS="2", OTP_MAX_PER_HOUR="5")
    with running_server(tmp_path, **env) as (_, base):
        bodies = [{"email": "bob@example.com", "purpose": "email_verification"}] * 30
        statuses = asyncio.run(_send_codes_at_once(base, bodies))
        assert sorted(statuses) == [202] * 5 + [429] * 25
    assert len(smtp_server.mails_to("bob@example.com")) == 5


async def test_the_cooldown_holds_across_purposes(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    env = settings_env(tmp_path, database_url, smtp_server, OTP_RESEND_COOLDOWN_SECONDS="60")
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        verify = {"email": "ann@example.com", "purpose": "email_verification"}
        reset = {"email": "Ann@example.com", "purpose": "password_reset"}
        assert (await client.post("/auth/send-otp", json=verify)).status_code == 202
        assert_problem(await client.post("/auth/send-otp", json=reset), 429)
    assert len(smtp_server.mails_to("ann@example.com")) == 1
