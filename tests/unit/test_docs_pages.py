"""The documentation pages work offline (issue 11): /docs and /redoc load Swagger
UI and ReDoc from files the server ships, under a Content-Security-Policy of
their own that names no other host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from web.app import create_app
from web.composition import memory_container
from web.settings import load_settings

PAGES = ("/docs", "/redoc")
DOCUMENT_URL = "/schema/openapi.json"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"


class PageLinks(HTMLParser):
    """The URLs a page loads, the spec URL it hands the viewer, and any inline script."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.spec_urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = True
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(str(attributes[name]))
        for name in ("spec-url", "data-spec-url"):
            if attributes.get(name):
                self.spec_urls.append(str(attributes[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(
        environ={"ENVIRONMENT": "development", "DATA_DIR": str(tmp_path)}, env_file=None
    )
    async with AsyncTestClient(create_app(memory_container(settings))) as client:
        yield client


async def links(client: AsyncTestClient[Litestar], page: str) -> PageLinks:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "://" not in response.text  # no URL names another host
    return PageLinks(response.text)


def directives(policy: str) -> dict[str, str]:
    pairs = (d.strip().partition(" ") for d in policy.split(";") if d.strip())
    return {name: value for name, _, value in pairs}


@pytest.mark.parametrize("page", PAGES)
async def test_a_page_loads_only_same_origin_files_and_no_inline_script(
    client: AsyncTestClient[Litestar], page: str
) -> None:
    found = await links(client, page)
    assert any(".js" in url for url in found.urls)
    for url in found.urls:
        assert url.startswith("/docs/assets/"), url
    assert found.inline_scripts == []


@pytest.mark.parametrize("page", PAGES)
async def test_every_file_a_page_loads_is_served_and_cached(
    client: AsyncTestClient[Litestar], page: str
) -> None:
    for url in (await links(client, page)).urls:
        response = await client.get(url)
        assert response.status_code == 200, url
        suffix = Path(url.partition("?")[0]).suffix
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
        cache = response.headers["cache-control"]
        assert "public" in cache
        assert "max-age=31536000" in cache


@pytest.mark.parametrize("page", PAGES)
async def test_a_page_shows_the_apps_openapi_document(
    client: AsyncTestClient[Litestar], page: str
) -> None:
    assert (await links(client, page)).spec_urls == [DOCUMENT_URL]
    document = await client.get(DOCUMENT_URL)
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.")


async def test_swagger_ui_starts_from_a_shipped_file_that_keeps_the_token(
    client: AsyncTestClient[Litestar],
) -> None:
    (init,) = [url for url in (await links(client, "/docs")).urls if "swagger-init.js" in url]
    script = (await client.get(init)).text
    assert "url: root.dataset.specUrl" in script  # the page's data-spec-url
    assert "persistAuthorization: true" in script
    assert "deepLinking: true" in script
    assert "validatorUrl: null" in script  # no badge from validator.swagger.io


@pytest.mark.parametrize("path", [*PAGES, "/docs/assets/swagger-ui-bundle.js"])
async def test_the_docs_have_their_own_content_security_policy(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    response = await client.get(path)
    policy = response.headers["content-security-policy"]
    assert "http" not in policy
    assert "cdn" not in policy
    assert "unsafe-eval" not in policy
    rules = directives(policy)
    assert rules["default-src"] == "'none'"
    assert rules["script-src"] == "'self'"
    assert rules["connect-src"] == "'self'"
    assert rules["frame-ancestors"] == "'none'"
    assert rules["base-uri"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/health", DOCUMENT_URL, "/auth/me", "/docs-not"])
async def test_everything_else_keeps_the_strict_policy(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    response = await client.get(path)
    assert response.headers["content-security-policy"] == STRICT_CSP
