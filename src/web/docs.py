"""The API's documentation pages, served only when ``DOCS_ENABLED``: the OpenAPI
document at ``/schema/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Gemini Backend",
        version=version,
        description="Accounts, streaming chats with an LLM, image uploads and administration.",
        path="/schema",
        render_plugins=[JsonRenderPlugin(path="/openapi.json")],
    )


def docs_router() -> Router:
    """The `/docs` and `/redoc` pages, rendered from the app's own OpenAPI document."""
    swagger, redoc = SwaggerRenderPlugin(), RedocRenderPlugin()

    def schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
        document: dict[str, Any] = request.app.openapi_schema.to_schema()
        return document

    @get("/docs", media_type=MediaType.HTML, sync_to_thread=False)
    def swagger_ui(request: Request[Any, Any, Any]) -> bytes:
        return swagger.render(request, schema(request))

    @get("/redoc", media_type=MediaType.HTML, sync_to_thread=False)
    def redoc_ui(request: Request[Any, Any, Any]) -> bytes:
        return redoc.render(request, schema(request))

    return Router(path="/", route_handlers=[swagger_ui, redoc_ui], include_in_schema=False)
