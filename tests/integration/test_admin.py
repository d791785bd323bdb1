"""/admin over HTTP on PostgreSQL: guards, statistics, users, soft delete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from adapters.bootstrap import Repositories
from adapters.postgres.pool import Database
from gemini_core.entities import MessageRole, NewChat, NewMessage
from web.app import create_app
from web.settings import load_settings

from .api import PASSWORD, Api, assert_problem, settings_env
from .server import running_server
from .smtp import SmtpServer

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "an admin passphrase"


@dataclass
class Admin:
    api: Api
    token: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **params: Any) -> Any:
        return await self.api.client.get(path, params=params, headers=self.headers)


@pytest.fixture
async def admin(
    tmp_path: Path, database_url: str, database: Database, smtp_server: SmtpServer
) -> AsyncIterator[Admin]:
    env = settings_env(
        tmp_path, database_url, smtp_server, ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=ADMIN_PASSWORD
    )
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        api = Api(
            client=client, smtp=smtp_server, app=app, repos=Repositories.on_postgres(database)
        )
        login = (await api.login(ADMIN_EMAIL, ADMIN_PASSWORD)).json()
        yield Admin(api=api, token=login["access_token"], user_id=login["user"]["id"])


async def test_admin_routes_need_an_admin(admin: Admin) -> None:
    user = await admin.api.register("ann@example.com", "ann")
    routes = [
        ("GET", "/admin/stats"),
        ("GET", "/admin/users"),
        ("PUT", f"/admin/users/{user['user']['id']}"),
        ("DELETE", f"/admin/users/{user['user']['id']}"),
    ]
    for method, path in routes:
        body = {"full_name": "x"} if method == "PUT" else None
        anonymous = await admin.api.client.request(method, path, json=body)
        assert_problem(anonymous, 401)
        signed_in = await admin.api.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {user['access_token']}"}
        )
        assert_problem(signed_in, 403)


async def test_statistics_move_with_the_data(admin: Admin) -> None:
    stats = (await admin.get("/admin/stats")).json()
    assert stats == {
        "total_users": 1,
        "total_chats": 0,
        "total_messages": 0,
        "active_users_today": 1,
        "new_users_this_week": 1,
    }
    ann = await admin.api.register("ann@example.com", "ann")
    bob = await admin.api.register("bob@example.com", "bob")
    container = admin.api.repos
    chat = await container.chats.add(NewChat(user_id=ann["user"]["id"], model="echo"))
    for role in (MessageRole.USER, MessageRole.ASSISTANT):
        await container.messages.add(
            NewMessage(chat_id=chat.id, user_id=ann["user"]["id"], role=role, content="hi")
        )
    await admin.api.get("/auth/me", bob["access_token"])  # bob uses the API today
    stats = (await admin.get("/admin/stats")).json()
    assert stats == {
        "total_users": 3,
        "total_chats": 1,
        "total_messages": 2,
        "active_users_today": 2,  # the admin signed in; bob used the API
        "new_users_this_week": 3,
    }
    deleted = await admin.api.client.delete(
        f"/admin/users/{ann['user']['id']}", headers=admin.headers
    )
    assert deleted.status_code == 204
    stats = (await admin.get("/admin/stats")).json()
    assert (stats["total_users"], stats["total_chats"], stats["total_messages"]) == (2, 0, 0)


async def test_users_are_paged_and_searched(admin: Admin) -> None:
    container = admin.api.repos
    from gemini_core.entities import NewUser

    for n in range(24):
        await container.users.add(
            NewUser(email=f"user{n:02d}@example.com", username=f"member{n:02d}", password_hash="x")
        )
    first = (await admin.get("/admin/users", page=1, size=10)).json()
    assert (first["total"], first["page"], first["size"], first["pages"]) == (25, 1, 10, 3)
    assert len(first["items"]) == 10
    assert set(first["items"][0]) >= {"id", "email", "username", "is_admin"}
    assert "password_hash" not in first["items"][0]
    pages = [first] + [(await admin.get("/admin/users", page=p, size=10)).json() for p in (2, 3)]
    ids = [item["id"] for page in pages for item in page["items"]]
    assert len(ids) == len(set(ids)) == 25
    beyond = (await admin.get("/admin/users", page=4, size=10)).json()
    assert beyond["items"] == []

    found = (await admin.get("/admin/users", q="MEMBER1")).json()
    assert found["total"] == 10
    assert all("member1" in item["username"] for item in found["items"])
    by_email = (await admin.get("/admin/users", q="user07@")).json()
    assert [item["username"] for item in by_email["items"]] == ["member07"]

    for params in ({"size": 0}, {"size": 101}, {"page": 0}, {"page": "x"}):
        assert_problem(await admin.get("/admin/users", **params), 422)


async def test_an_admin_edits_a_user_and_deactivation_cuts_them_off(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await admin.api.register("ann@example.com", "ann")
    await admin.api.register("bob@example.com", "bob")
    path = f"/admin/users/{ann['user']['id']}"
    put = admin.api.client.put
    with caplog.at_level(logging.INFO, logger="gemini.audit"):
        edited = await put(
            path,
            json={"full_name": "Ann A.", "username": "ann.a", "is_verified": False},
            headers=admin.headers,
        )
    assert edited.status_code == 200
    body = edited.json()
    assert (body["full_name"], body["username"], body["is_verified"]) == ("Ann A.", "ann.a", False)
    record = next(r for r in caplog.records if r.name == "gemini.audit")
    assert (record.actor_id, record.target_id) == (admin.user_id, ann["user"]["id"])  # type: ignore[attr-defined]
    assert sorted(record.changes) == ["full_name", "is_verified", "username"]  # type: ignore[attr-defined]

    assert_problem(await put(path, json={"username": "BOB"}, headers=admin.headers), 409)
    assert_problem(await put(path, json={"username": "no spaces"}, headers=admin.headers), 422)
    assert_problem(await put(path, json={"is_admin": "yes"}, headers=admin.headers), 422)
    assert_problem(await put("/admin/users/999999", json={}, headers=admin.headers), 404)

    assert (await admin.api.get("/auth/me", ann["access_token"])).status_code == 200
    off = await put(path, json={"is_active": False}, headers=admin.headers)
    assert off.json()["is_active"] is False
    assert_problem(await admin.api.get("/auth/me", ann["access_token"]), 401)
    assert_problem(await admin.api.refresh(ann["refresh_token"]), 401)
    assert_problem(await admin.api.login("ann@example.com"), 403)
    await put(path, json={"is_active": True}, headers=admin.headers)
    assert (await admin.api.login("ann@example.com", PASSWORD)).status_code == 200


async def test_promotion_and_demotion_apply_on_the_next_request(admin: Admin) -> None:
    ann = await admin.api.register("ann@example.com", "ann")
    path = f"/admin/users/{ann['user']['id']}"
    ann_headers = {"Authorization": f"Bearer {ann['access_token']}"}
    assert_problem(await admin.api.client.get("/admin/stats", headers=ann_headers), 403)
    await admin.api.client.put(path, json={"is_admin": True}, headers=admin.headers)
    assert (await admin.api.client.get("/admin/stats", headers=ann_headers)).status_code == 200
    await admin.api.client.put(path, json={"is_admin": False}, headers=admin.headers)
    assert_problem(await admin.api.client.get("/admin/stats", headers=ann_headers), 403)


async def test_an_admin_cannot_demote_deactivate_or_delete_themself(admin: Admin) -> None:
    path = f"/admin/users/{admin.user_id}"
    for change in ({"is_admin": False}, {"is_active": False}):
        assert_problem(await admin.api.client.put(path, json=change, headers=admin.headers), 409)
    assert_problem(await admin.api.client.delete(path, headers=admin.headers), 409)
    renamed = await admin.api.client.put(path, json={"full_name": "Root"}, headers=admin.headers)
    assert renamed.json()["full_name"] == "Root"


async def test_soft_delete_keeps_the_row_and_ends_everything(admin: Admin) -> None:
    ann = await admin.api.register("ann@example.com", "ann")
    user_id = ann["user"]["id"]
    deleted = await admin.api.client.delete(f"/admin/users/{user_id}", headers=admin.headers)
    assert deleted.status_code == 204
    row = await admin.api.repos.users.get(user_id)
    assert row is not None
    assert row.deleted_at is not None
    assert_problem(await admin.api.get("/auth/me", ann["access_token"]), 401)
    assert_problem(await admin.api.refresh(ann["refresh_token"]), 401)
    assert_problem(await admin.api.login("ann@example.com"), 403)
    listed = (await admin.get("/admin/users")).json()
    assert user_id not in [item["id"] for item in listed["items"]]
    again = await admin.api.client.delete(f"/admin/users/{user_id}", headers=admin.headers)
    assert_problem(again, 404)
    edit = await admin.api.client.put(
        f"/admin/users/{user_id}", json={"is_active": True}, headers=admin.headers
    )
    assert_problem(edit, 404)


# --- the last admin, on the real server ----------------------------------------------


async def _race_admins(base: str, smtp: SmtpServer) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        root = (
            await client.post(
                "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
        ).json()
        await client.post(
            "/auth/send-otp", json={"email": "ann@example.com", "purpose": "email_verification"}
        )
        code = await smtp.wait_for_code_async("ann@example.com")
        user_data = {"email": "ann@example.com", "username": "ann", "password": PASSWORD}
        registered = await client.post(
            "/auth/register",
            json={"email": "ann@example.com", "otp_code": code, "user_data": user_data},
        )
        ann = registered.json()
        admins = {
            root["user"]["id"]: {"Authorization": f"Bearer {root['access_token']}"},
            ann["user"]["id"]: {"Authorization": f"Bearer {ann['access_token']}"},
        }
        (root_id, root_auth), (ann_id, ann_auth) = admins.items()
        promoted = await client.put(
            f"/admin/users/{ann_id}", json={"is_admin": True}, headers=root_auth
        )
        assert promoted.status_code == 200

        for _ in range(5):
            # Each demotes the other at the same moment, on connections of their own.
            async with (
                httpx.AsyncClient(base_url=base, timeout=60) as a,
                httpx.AsyncClient(base_url=base, timeout=60) as b,
            ):
                await asyncio.gather(a.get("/health"), b.get("/health"))
                answers = await asyncio.gather(
                    a.put(f"/admin/users/{ann_id}", json={"is_admin": False}, headers=root_auth),
                    b.put(f"/admin/users/{root_id}", json={"is_admin": False}, headers=ann_auth),
                )
            # The loser is refused by the last-admin rule (409), or is no admin
            # any more by the time its request is checked (403).
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses in ([200, 403], [200, 409])
            for answer in answers:
                if answer.status_code == 409:
                    assert "last active admin" in assert_problem(answer, 409)["detail"]
            winner, loser = (
                (root_auth, ann_id) if answers[0].status_code == 200 else (ann_auth, root_id)
            )
            listed = (await client.get("/admin/users", headers=winner)).json()["items"]
            assert [user["id"] for user in listed if user["is_admin"]] != [loser]
            assert sum(user["is_admin"] for user in listed) == 1
            again = await client.put(
                f"/admin/users/{loser}", json={"is_admin": True}, headers=winner
            )
            assert again.status_code == 200

        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as a,
            httpx.AsyncClient(base_url=base, timeout=60) as b,
        ):
            answers = await asyncio.gather(
                a.delete(f"/admin/users/{ann_id}", headers=root_auth),
                b.put(f"/admin/users/{root_id}", json={"is_active": False}, headers=ann_auth),
            )
        # One wins; the other is refused, or finds itself deactivated (401) or
        # deleted first.
        assert sum(answer.status_code in (200, 204) for answer in answers) == 1
        assert {answer.status_code for answer in answers} <= {200, 204, 401, 403, 409}


def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    env = settings_env(
        tmp_path,
        database_url,
        smtp_server,
        WORKERS="2",
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    with running_server(tmp_path, **env) as (_, base):
        asyncio.run(_race_admins(base, smtp_server))
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM users WHERE is_admin AND is_active AND deleted_at IS NULL"
        ).fetchone()
    assert row == (1,)
