"""The API's documentation pages, served only when ``DOCS_ENABLED``: the OpenAPI
document at ``/schema/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

The pages load Swagger UI and ReDoc from files the package ships
(``static/docs``, served under ``/docs/assets``), never from a CDN, so they work
offline and under a Content-Security-Policy that allows only this origin."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from html import escape
from pathlib import Path

from litestar import MediaType, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router

from web.contract import ContractJsonPlugin

TITLE = "Gemini Backend"
SCHEMA_PATH = "/schema"
DOCUMENT_URL = f"{SCHEMA_PATH}/openapi.json"
ASSETS_PATH = "/docs/assets"
ASSETS_CACHE = CacheControlHeader(public=True, max_age=365 * 24 * 3600, immutable=True)

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{favicon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{document}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{favicon}">
</head>
<body>
<redoc spec-url="{document}"></redoc>
<script src="{bundle}"></script>
</body>
</html>
"""


def openapi_config(version: str, models: Sequence[str]) -> OpenAPIConfig:
    """The document's settings; `models` are the ones this server offers."""
    return OpenAPIConfig(
        title=TITLE,
        version=version,
        description="Accounts, streaming chats with an LLM, image uploads and administration.",
        path=SCHEMA_PATH,
        render_plugins=[
            ContractJsonPlugin(path=DOCUMENT_URL.removeprefix(SCHEMA_PATH), models=models)
        ],
    )


def docs_router() -> Router:
    """The `/docs` and `/redoc` pages and the assets they load from `/docs/assets`."""
    assets = Path(__file__).with_name("static") / "docs"

    def url(name: str) -> str:
        # The content's hash in the URL lets a browser cache the file for a
        # year yet fetch it anew as soon as it changes.
        digest = hashlib.sha256((assets / name).read_bytes()).hexdigest()[:16]
        return f"{ASSETS_PATH}/{name}?v={digest}"

    common = {"title": escape(TITLE), "document": DOCUMENT_URL, "favicon": url("favicon-32x32.png")}
    swagger = SWAGGER_PAGE.format(
        **common,
        css=url("swagger-ui.css"),
        bundle=url("swagger-ui-bundle.js"),
        init=url("swagger-init.js"),
    ).encode()
    redoc = REDOC_PAGE.format(**common, bundle=url("redoc.standalone.js")).encode()

    @get("/docs", media_type=MediaType.HTML, sync_to_thread=False)
    def swagger_ui() -> bytes:
        return swagger

    @get("/redoc", media_type=MediaType.HTML, sync_to_thread=False)
    def redoc_ui() -> bytes:
        return redoc

    assets_router = create_static_files_router(
        ASSETS_PATH, directories=[assets], name="docs_assets", cache_control=ASSETS_CACHE
    )
    return Router(
        path="/", route_handlers=[swagger_ui, redoc_ui, assets_router], include_in_schema=False
    )
