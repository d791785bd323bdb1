"""The API's documentation pages, served only when ``DOCS_ENABLED``: the OpenAPI
document at ``/schema/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin

_swagger = SwaggerRenderPlugin()
_redoc = RedocRenderPlugin()


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Gemini Backend",
        version=version,
        description="Accounts, streaming chats with an LLM, image uploads and administration.",
        path="/schema",
        render_plugins=[JsonRenderPlugin(path="/openapi.json")],
    )


def _schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi_schema.to_schema()
    return schema


@get("/docs", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def swagger_ui(request: Request[Any, Any, Any]) -> bytes:
    return _swagger.render(request, _schema(request))


@get("/redoc", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def redoc(request: Request[Any, Any, Any]) -> bytes:
    return _redoc.render(request, _schema(request))


docs_router = Router(path="/", route_handlers=[swagger_ui, redoc], include_in_schema=False)
