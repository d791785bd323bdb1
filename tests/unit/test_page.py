"""The chat page at ``/``: served with its own strict policy, every file it
loads from this origin, nothing inline, and no part of the API's document.
What it does in a browser: tests/browser."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.config import production_settings
from tests.unit.test_docs_pages import PageLinks, directives
from web.app import create_app
from web.composition import memory_container
from web.settings import load_settings

ASSETS = Path(__file__).resolve().parents[2] / "src" / "web" / "static" / "app"
# Module imports name their files without the version: every one the page may load.
MODULES = (
    "app.js",
    "admin.js",
    "api.js",
    "dom.js",
    "render.js",
    "vendor/marked.esm.js",
    "vendor/purify.es.js",
)


@pytest.fixture(params=["development", "production"])
async def client(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    if request.param == "production":
        settings = production_settings(tmp_path)
    else:
        environ = {"ENVIRONMENT": "development", "DATA_DIR": str(tmp_path)}
        settings = load_settings(environ=environ, env_file=None)
    async with AsyncTestClient(create_app(memory_container(settings))) as client:
        yield client


async def test_the_page_is_served_under_its_own_strict_policy(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    policy = directives(response.headers["content-security-policy"])
    assert policy == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' blob:",
        "connect-src": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert response.headers["x-frame-options"] == "DENY"

    page = PageLinks(response.text)
    assert page.inline_scripts == []
    assert "://" not in response.text
    assert not re.search(r"\son\w+=", response.text)  # no inline handlers either
    for url in page.urls:
        # Each of the page's own files by its content's hash: a new release loads at once.
        path, _, version = url.partition("?v=")
        name = path.removeprefix("/app/")
        assert version == hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()[:16]
        assert (await client.get(url)).status_code == 200


@pytest.mark.parametrize("name", MODULES)
async def test_every_module_is_served_as_javascript(
    client: AsyncTestClient[Litestar], name: str
) -> None:
    response = await client.get(f"/app/{name}")
    assert response.status_code == 200
    # A browser refuses a module script of any other type.
    assert response.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for imported in re.findall(r'from "\./([\w./-]+)"', response.text):
        assert str(Path(name).parent / imported).removeprefix("./") in MODULES


async def test_the_page_is_no_part_of_the_api_document(
    client: AsyncTestClient[Litestar],
) -> None:
    document = await client.get("/schema/openapi.json")
    if document.status_code == 404:  # production serves no document
        return
    paths = document.json()["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/app")]
