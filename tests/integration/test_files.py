"""/upload, /uploads/{filename} and /files over HTTP, on PostgreSQL, with the
bytes in a local folder and in S3 (moto's server): every test runs on both."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.bootstrap import Repositories
from adapters.postgres.pool import Database
from gemini_core.entities import UserChanges
from tests.images import HTML, IMAGES, PDF, SVG, TEXT, jpeg, png, webp_extended, webp_lossless
from web.app import create_app
from web.settings import load_settings

from .api import Api, assert_problem, settings_env
from .s3 import S3Server, s3_server  # noqa: F401  (a fixture)
from .server import running_server
from .smtp import SmtpServer
from .test_operations import ADMIN, production_env

LIMIT = 256 * 1024
BOUNDARY = "gemini-test-boundary"


@dataclass
class Files:
    """The API, signed-in helpers, and a look into the store behind it."""

    api: Api
    backend: str
    stored: Callable[[], list[str]]
    folder: Path

    @property
    def client(self) -> AsyncTestClient[Litestar]:
        return self.api.client

    async def sign_up(self, name: str, *, admin: bool = False) -> str:
        pair = await self.api.register(f"{name}@example.com", name)
        if admin:
            await self.api.repos.users.update(pair["user"]["id"], UserChanges(is_admin=True))
        token: str = pair["access_token"]
        return token

    async def upload(
        self,
        token: str,
        data: bytes,
        name: str = "photo.png",
        declared: str = "image/png",
        field: str = "file",
    ) -> httpx.Response:
        return await self.client.post(
            "/upload", files={field: (name, data, declared)}, headers=bearer(token)
        )

    async def uploaded(self, token: str, data: bytes, name: str = "photo.png") -> dict[str, Any]:
        response = await self.upload(token, data, name)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, path: str, token: str | None) -> httpx.Response:
        return await self.client.get(path, headers=bearer(token) if token else None)

    async def delete(self, path: str, token: str) -> httpx.Response:
        return await self.client.delete(path, headers=bearer(token))

    async def listed(self, token: str, query: str = "") -> dict[str, Any]:
        response = await self.get(f"/files{query}", token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    database_url: str,
    smtp: SmtpServer,
    **extra: str,
) -> AsyncIterator[Files]:
    folder = tmp_path / "uploads"
    env = settings_env(
        tmp_path, database_url, smtp, UPLOAD_DIR=str(folder), MAX_UPLOAD_SIZE=str(LIMIT), **extra
    )
    stored: Callable[[], list[str]]
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = server.new_bucket()
        env.update(server.settings(bucket))
        stored = lambda: server.keys(bucket)  # noqa: E731
    else:
        stored = lambda: sorted(p.name for p in folder.iterdir()) if folder.exists() else []  # noqa: E731
    app = create_app(settings=load_settings(environ=env, env_file=None))
    database = Database(database_url, min_size=1, max_size=2)
    await database.open()
    try:
        async with AsyncTestClient(app) as client:
            repos = Repositories.on_postgres(database)
            api = Api(client=client, smtp=smtp, app=app, repos=repos)
            yield Files(api, backend, stored, folder)
    finally:
        await database.close()


@pytest.fixture(params=["local", "s3"])
async def files(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> AsyncIterator[Files]:
    async with running(request, request.param, tmp_path, database_url, smtp_server) as api:
        yield api


# --- accepted images -----------------------------------------------------------

KINDS = {
    **{content_type: (build, ext) for content_type, (build, ext) in IMAGES.items()},
    "image/webp (lossless)": (webp_lossless, ".webp"),
    "image/webp (extended)": (webp_extended, ".webp"),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_every_image_kind_is_stored_and_served_back(files: Files, kind: str) -> None:
    build, extension = KINDS[kind]
    content_type = kind.split(" ")[0]
    data = build(4, 3)
    ann = await files.sign_up("ann")
    response = await files.upload(ann, data, name="My Photo.bin", declared="application/x-whatever")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= {"id", "filename", "original_filename", "url", "file_size", "content_type"}
    assert body["filename"].endswith(extension)
    assert len(body["filename"]) == 32 + len(extension)
    assert body["url"] == f"/uploads/{body['filename']}"
    assert (body["original_filename"], body["file_size"]) == ("My Photo.bin", len(data))
    assert body["content_type"] == content_type
    assert files.stored() == [body["filename"]]

    served = await files.get(body["url"], ann)
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == content_type
    assert served.headers["x-content-type-options"] == "nosniff"
    # The uploader's name, with the extension of what the bytes are.
    assert served.headers["content-disposition"] == f'inline; filename="My Photo{extension}"'
    assert served.headers["cache-control"] == "private"
    assert served.headers["content-length"] == str(len(data))


async def test_a_bigger_file_streams_back_whole(files: Files) -> None:
    data = jpeg(1920, 1080, metadata=100_000) + bytes(range(256)) * 500
    ann = await files.sign_up("ann")
    body = await files.uploaded(ann, data, name="big.jpg")
    assert body["file_size"] == len(data) < LIMIT
    served = await files.get(body["url"], ann)
    assert served.content == data


# --- refused uploads -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared"),
    [(TEXT, "image/png"), (HTML, "image/png"), (SVG, "image/svg+xml"), (PDF, "image/png")],
    ids=["text", "html", "svg", "pdf"],
)
async def test_fakes_are_415_whatever_their_name_or_declared_type(
    files: Files, data: bytes, declared: str
) -> None:
    ann = await files.sign_up("ann")
    problem = assert_problem(await files.upload(ann, data, "cute.png", declared), 415)
    assert "JPEG, PNG, GIF or WebP" in problem["detail"]
    assert files.stored() == []
    assert (await files.listed(ann))["items"] == []


async def test_a_traversal_shaped_name_is_only_metadata(files: Files) -> None:
    ann = await files.sign_up("ann")
    body = await files.uploaded(ann, png(), name="../../../etc/cron.d/..\\evil.png")
    assert body["original_filename"] == "evil.png"
    assert files.stored() == [body["filename"]]
    if files.backend == "local":
        tree = sorted(
            str(p.relative_to(files.folder.parent)) for p in files.folder.parent.rglob("*")
        )
        assert [p for p in tree if "evil" in p or "cron" in p] == []
    served = await files.get(body["url"], ann)
    assert served.headers["content-disposition"] == 'inline; filename="evil.png"'


async def test_a_page_name_is_suggested_with_the_images_extension(files: Files) -> None:
    ann = await files.sign_up("ann")
    for name, suggested in (
        ("x.html", "x.png"),
        ("x.svg", "x.png"),
        ("report.pdf.exe", "report.pdf.png"),
        ("noextension", "noextension.png"),
        (".htaccess", "htaccess.png"),  # leading dots are cleaned off first
    ):
        body = await files.uploaded(ann, png(), name=name)
        assert body["original_filename"] == name.lstrip(".")  # the record keeps the name
        served = await files.get(body["url"], ann)
        assert served.headers["content-disposition"] == f'inline; filename="{suggested}"'


async def test_a_name_beyond_ascii_is_sent_both_ways(files: Files) -> None:
    ann = await files.sign_up("ann")
    body = await files.uploaded(ann, png(), name='café "menu".png')
    assert body["original_filename"] == "café menu.png"
    served = await files.get(body["url"], ann)
    assert served.headers["content-disposition"] == (
        "inline; filename=\"caf_ menu.png\"; filename*=UTF-8''caf%C3%A9%20menu.png"
    )


async def test_an_oversized_file_is_413_and_leaves_nothing(files: Files) -> None:
    ann = await files.sign_up("ann")
    problem = assert_problem(await files.upload(ann, png() + b"\x00" * LIMIT), 413)
    assert problem["detail"] == "The file is larger than the limit of 256 KiB."
    assert files.stored() == []
    assert (await files.listed(ann))["items"] == []


async def test_a_decompression_bomb_is_refused(files: Files) -> None:
    ann = await files.sign_up("ann")
    problem = assert_problem(await files.upload(ann, png(100_000, 100_000)), 422)
    assert "100000 x 100000" in problem["detail"]
    assert problem["errors"][0]["field"] == "file"
    assert files.stored() == []


async def test_a_missing_or_empty_field_is_422(files: Files) -> None:
    ann = await files.sign_up("ann")
    missing = assert_problem(await files.upload(ann, png(), field="image"), 422)
    assert missing["errors"] == [{"field": "file", "message": missing["detail"]}]
    assert_problem(await files.upload(ann, b""), 422)
    no_form = await files.client.post("/upload", json={"file": "x"}, headers=bearer(ann))
    assert_problem(no_form, 415)
    assert files.stored() == []


async def test_a_malformed_or_cut_off_form_is_400_and_leaves_nothing(files: Files) -> None:
    ann = await files.sign_up("ann")
    headers = {**bearer(ann), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    nonsense = await files.client.post("/upload", content=b"no form here", headers=headers)
    assert "malformed" in assert_problem(nonsense, 400)["detail"]
    whole = b"".join(endless_upload(png(), total=1000))
    cut_off = whole[: -len(f"\r\n--{BOUNDARY}--\r\n")]
    assert_problem(await files.client.post("/upload", content=cut_off, headers=headers), 400)
    assert files.stored() == []
    complete = await files.client.post("/upload", content=whole, headers=headers)
    assert complete.status_code == 201, complete.text
    assert complete.json()["file_size"] == len(png()) + 64 * 1024  # the head, one filler


async def test_every_route_needs_a_token(files: Files) -> None:
    ann = await files.sign_up("ann")
    body = await files.uploaded(ann, png())
    assert_problem(await files.client.post("/upload", files={"file": ("a.png", png())}), 401)
    assert_problem(await files.get(body["url"], None), 401)
    assert_problem(await files.get("/files", None), 401)
    assert_problem(await files.client.delete(f"/files/{body['id']}"), 401)


# --- privacy and deletion ------------------------------------------------------


async def test_another_users_file_is_404_but_an_admin_may_read_it(files: Files) -> None:
    ann, bob = await files.sign_up("ann"), await files.sign_up("bob")
    root = await files.sign_up("root", admin=True)
    body = await files.uploaded(ann, png(2, 2))

    assert_problem(await files.get(body["url"], bob), 404)
    assert_problem(await files.delete(f"/files/{body['id']}", bob), 404)
    assert (await files.listed(bob))["items"] == []
    assert_problem(await files.get("/uploads/" + "0" * 32 + ".png", ann), 404)
    assert_problem(await files.get("/uploads/..%2F..%2Fetc%2Fpasswd", ann), 404)

    as_admin = await files.get(body["url"], root)
    assert as_admin.status_code == 200
    assert as_admin.content == png(2, 2)
    assert files.stored() == [body["filename"]]


async def test_delete_removes_the_record_and_the_bytes(files: Files) -> None:
    ann = await files.sign_up("ann")
    kept = await files.uploaded(ann, png(), name="kept.png")
    gone = await files.uploaded(ann, png(1, 2), name="gone.png")
    assert sorted(files.stored()) == sorted([kept["filename"], gone["filename"]])

    response = await files.delete(f"/files/{gone['id']}", ann)
    assert response.status_code == 204
    assert files.stored() == [kept["filename"]]
    assert_problem(await files.get(gone["url"], ann), 404)
    assert [item["id"] for item in (await files.listed(ann))["items"]] == [kept["id"]]
    assert_problem(await files.delete(f"/files/{gone['id']}", ann), 404)


# --- signed links (for <img src>, which sends no token) ------------------------


async def test_a_signed_link_serves_the_image_without_a_token(files: Files) -> None:
    ann = await files.sign_up("ann")
    body = await files.uploaded(ann, png(3, 3), name="holiday.png")
    assert body["signed_url"].startswith(f"/files/{body['id']}/content?")
    expires_at = datetime.fromisoformat(body["signed_url_expires_at"])
    assert timedelta(hours=1) <= expires_at - datetime.now(UTC) <= timedelta(hours=1, minutes=11)

    served = await files.get(body["signed_url"], None)
    assert served.status_code == 200
    assert served.content == png(3, 3)
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"] == 'inline; filename="holiday.png"'
    cache = served.headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 3600 <= int(cache.removeprefix("private, max-age=")) <= 3600 + 660
    # Listed files carry the same link.
    assert (await files.listed(ann))["items"][0]["signed_url"] == body["signed_url"]


async def test_a_bent_link_is_403_and_a_deleted_files_link_404(files: Files) -> None:
    ann, bob = await files.sign_up("ann"), await files.sign_up("bob")
    mine = await files.uploaded(ann, png(), name="mine.png")
    theirs = await files.uploaded(bob, png(2, 2), name="theirs.png")
    route, _, query = mine["signed_url"].partition("?")
    fields = dict(part.split("=", 1) for part in query.split("&"))

    def bent(**changes: object) -> str:
        return route + "?" + urlencode(fields | {k: str(v) for k, v in changes.items()})

    for path in [
        f"/files/{theirs['id']}/content?{query}",  # another file, this signature
        bent(owner=int(fields["owner"]) + 1),
        bent(expires=int(fields["expires"]) + 600),
        bent(signature="A" * 43),
        bent(expires=1),  # long expired, and not signed for that either
    ]:
        assert_problem(await files.get(path, None), 403)
        assert_problem(await files.get(path, bob), 403)  # a token does not help
    # Malformed or missing parts of the query.
    for path in [route, bent(owner="x"), bent(expires=-1), bent(signature="s" * 65)]:
        refused = await files.get(path, None)
        assert_problem(refused, 422)
        assert refused.json()["errors"][0]["field"] in {"owner", "expires", "signature"}

    assert (await files.delete(f"/files/{mine['id']}", ann)).status_code == 204
    assert_problem(await files.get(mine["signed_url"], None), 404)


# --- listing -------------------------------------------------------------------


async def test_files_are_listed_newest_first_with_a_cursor(files: Files) -> None:
    ann, bob = await files.sign_up("ann"), await files.sign_up("bob")
    mine = [(await files.uploaded(ann, png(), name=f"{n}.png"))["id"] for n in range(3)]
    await files.uploaded(bob, png(), name="bob.png")

    first = await files.listed(ann, "?limit=2")
    assert [item["id"] for item in first["items"]] == mine[:0:-1]
    assert set(first["items"][0]) == {
        "id",
        "filename",
        "original_filename",
        "url",
        "file_size",
        "content_type",
        "created_at",
        "signed_url",
        "signed_url_expires_at",
    }
    assert first["items"][0]["created_at"].endswith("Z")
    second = await files.listed(ann, f"?limit=2&cursor={first['next_cursor']}")
    assert ([item["id"] for item in second["items"]], second["next_cursor"]) == ([mine[0]], None)
    default = await files.listed(ann)
    assert (len(default["items"]), default["next_cursor"]) == (3, None)

    for query in ("?limit=0", "?limit=101", "?limit=ten", "?cursor=nonsense"):
        assert_problem(await files.get(f"/files{query}", ann), 422)


# --- quota ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_the_quota_is_413_with_a_clear_detail_and_frees_up_on_delete(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    database_url: str,
    smtp_server: SmtpServer,
) -> None:
    data = png() + b"\x00" * 100_000
    quota = str(2 * len(data) + 10)
    async with running(
        request, backend, tmp_path, database_url, smtp_server, UPLOAD_QUOTA_BYTES=quota
    ) as files:
        ann = await files.sign_up("ann")
        first = await files.uploaded(ann, data)
        await files.uploaded(ann, data)
        problem = assert_problem(await files.upload(ann, data), 413)
        assert "quota" in problem["detail"]
        assert len(files.stored()) == 2

        bob = await files.sign_up("bob")
        await files.uploaded(bob, data)  # a quota per user

        assert (await files.delete(f"/files/{first['id']}", ann)).status_code == 204
        await files.uploaded(ann, data)


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_racing_uploads_cannot_overrun_the_quota(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    database_url: str,
    smtp_server: SmtpServer,
) -> None:
    data = png() + b"\x00" * 100_000
    quota = str(2 * len(data))
    async with running(
        request, backend, tmp_path, database_url, smtp_server, UPLOAD_QUOTA_BYTES=quota
    ) as files:
        ann = await files.sign_up("ann")
        responses = await asyncio.gather(*(files.upload(ann, data) for _ in range(6)))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 201, 413, 413, 413, 413]
        kept = [r.json()["filename"] for r in responses if r.status_code == 201]
        assert sorted(files.stored()) == sorted(kept)


# --- reading the body as it arrives ---------------------------------------------


@dataclass
class RawResponse:
    status: int
    body: bytes
    pulled: int
    """Body bytes the application asked for before it answered."""


async def raw_upload(
    app: Litestar, token: str, parts: Iterator[bytes], *, content_length: int | None = None
) -> RawResponse:
    """POST /upload straight through ASGI, handing the body over one chunk at
    a time, as a server does, and counting how much of it was read."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(parts, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"testserver"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
    ]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return RawResponse(status=start["status"], body=body, pulled=pulled)


def endless_upload(head: bytes, *, chunk: int = 64 * 1024, total: int = 1 << 30) -> Iterator[bytes]:
    """A form whose file starts with ``head`` and goes on for ``total`` bytes."""
    yield (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="huge.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + head
    sent = len(head)
    filler = b"\x00" * chunk
    while sent < total:
        yield filler
        sent += chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_a_gigabyte_body_is_refused_after_about_the_limit(files: Files) -> None:
    ann = await files.sign_up("ann")
    answer = await raw_upload(files.api.app, ann, endless_upload(png()))
    assert answer.status == 413, answer.body
    assert answer.pulled <= LIMIT + 2 * 64 * 1024
    assert files.stored() == []


async def test_a_declared_length_over_the_limit_is_refused_unread(files: Files) -> None:
    ann = await files.sign_up("ann")
    answer = await raw_upload(files.api.app, ann, endless_upload(png()), content_length=1 << 30)
    assert answer.status == 413, answer.body
    assert answer.pulled == 0


async def test_a_bomb_is_refused_on_its_first_chunk(files: Files) -> None:
    ann = await files.sign_up("ann")
    answer = await raw_upload(files.api.app, ann, endless_upload(png(100_000, 100_000)))
    assert answer.status == 422, answer.body
    assert answer.pulled <= 64 * 1024 + 1024


async def test_a_fake_is_refused_on_its_first_chunk(files: Files) -> None:
    ann = await files.sign_up("ann")
    answer = await raw_upload(files.api.app, ann, endless_upload(HTML))
    assert answer.status == 415, answer.body
    assert answer.pulled <= 64 * 1024 + 1024


async def test_an_unreachable_s3_is_503(
    tmp_path: Path, database_url: str, database: Database, smtp_server: SmtpServer
) -> None:
    env = settings_env(
        tmp_path,
        database_url,
        smtp_server,
        STORAGE_BACKEND="s3",
        S3_BUCKET="uploads",
        S3_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    app = create_app(settings=load_settings(environ=env, env_file=None))
    async with AsyncTestClient(app) as client:
        api = Api(
            client=client, smtp=smtp_server, app=app, repos=Repositories.on_postgres(database)
        )
        token = (await api.register("ann@example.com", "ann"))["access_token"]
        response = await client.post(
            "/upload", files={"file": ("a.png", png())}, headers=bearer(token)
        )
        problem = assert_problem(response, 503)
        assert "127.0.0.1" not in problem["detail"]
        assert response.headers["retry-after"]
        assert (await client.get("/files", headers=bearer(token))).json()["items"] == []


# --- two workers, no shared cache ----------------------------------------------------


@pytest.mark.parametrize("cache", ["each worker's", "redis"])
def test_a_deleted_file_is_a_quiet_404_in_every_worker(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    """Without Redis each worker has a cache of its own: the one that did not
    delete the file keeps its record, and must find the bytes gone quietly. With
    Redis the deletion drops the shared records, by name and by id."""
    env = production_env(tmp_path, database_url, WORKERS="2", RATE_LIMIT_ENABLED="false")
    if cache == "redis":
        if not os.environ.get("REDIS_URL"):
            pytest.skip("needs REDIS_URL")
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)  # the server inherits the environment
    with running_server(tmp_path, **env) as (process, base):
        login = httpx.post(f"{base}/auth/login", json=ADMIN)
        auth = bearer(login.json()["access_token"])
        uploaded = httpx.post(f"{base}/upload", files={"file": ("a.png", png())}, headers=auth)
        assert uploaded.status_code == 201, uploaded.text
        body = uploaded.json()
        # Fresh connections, so both workers serve (and could cache) the record,
        # by its name and by its signed link.
        for _ in range(12):
            assert httpx.get(f"{base}{body['url']}", headers=auth).status_code == 200
            assert httpx.get(f"{base}{body['signed_url']}").status_code == 200
        assert httpx.delete(f"{base}/files/{body['id']}", headers=auth).status_code == 204
        for _ in range(12):
            assert_problem(httpx.get(f"{base}{body['url']}", headers=auth), 404)
            assert_problem(httpx.get(f"{base}{body['signed_url']}"), 404)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    errors = tmp_path / "logs" / "error.log"
    assert not errors.exists() or errors.read_text() == ""
    assert "bytes are missing" not in (tmp_path / "logs" / "app.log").read_text()
