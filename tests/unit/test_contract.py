"""The OpenAPI document as a consumer reads it: valid, complete about errors and
security, and its examples valid against their own schemas. schemathesis then
checks it against a live server (tests/contract)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema.exceptions import ValidationError
from litestar.testing import AsyncTestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from web.app import create_app
from web.composition import memory_container
from web.settings import load_settings

PROBLEM_JSON = "application/problem+json"
PUBLIC = {"/health", "/health/database", "/metrics", "/auth/send-otp", "/auth/register"}
PUBLIC |= {"/auth/login", "/auth/refresh", "/auth/reset-password", "/files/{file_id}/content"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import asyncio

    async def fetch() -> dict[str, Any]:
        tmp_path = tmp_path_factory.mktemp("contract")
        settings = load_settings({"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None)
        async with AsyncTestClient(create_app(memory_container(settings))) as client:
            response = await client.get("/schema/openapi.json")
            assert response.status_code == 200
            again = await client.get("/schema/openapi.json")
            assert again.content == response.content  # completed once, not twice
            body: dict[str, Any] = response.json()
            return body

    return asyncio.run(fetch())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    """A validator for `schema`; the document's components ride along, so its
    `#/components/...` references resolve."""
    return OAS31Validator({**schema, "components": document["components"]})


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_error_is_a_problem_and_every_response_names_its_headers(
    document: dict[str, Any],
) -> None:
    health = {"/health", "/health/database"}  # their 503 is their own report, unhealthy
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if status.startswith("2") or (path in health and status == "503"):
                continue
            content = response["content"]
            assert list(content) == [PROBLEM_JSON], (method, path, status)
            assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert response["description"], (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)


def test_statuses_follow_from_what_a_route_is(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        statuses = set(operation["responses"])
        where = f"{method} {path}"
        parameters = operation.get("parameters", [])
        if any(p["in"] == "path" for p in parameters):
            assert "404" in statuses, where
        if parameters or "requestBody" in operation:
            assert "422" in statuses, where
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert {"400", "413", "415"} <= statuses, where
        if path.startswith("/admin"):
            assert "403" in statuses, where
        if path not in {"/health", "/health/database", "/metrics"}:
            assert {"429", "503"} <= statuses, where


def test_signed_in_routes_use_the_bearer_scheme_and_public_ones_say_so(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in operations(document):
        if path in PUBLIC:
            assert operation["security"] == [], f"{method} {path}"
        else:
            assert operation["security"] == [{"bearer": []}], f"{method} {path}"
            assert "401" in operation["responses"], f"{method} {path}"


def test_the_request_examples_match_their_schemas(document: dict[str, Any]) -> None:
    shown = set()
    for path, method, operation in operations(document):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            for example in media.get("examples", {}).values():
                try:
                    schema_validator(document, media["schema"]).validate(example["value"])
                except ValidationError as exc:  # pragma: no cover - the message is the point
                    pytest.fail(f"{method} {path}: the example breaks its schema: {exc.message}")
                shown.add(f"{method} {path}")
    assert {
        "POST /auth/send-otp",
        "POST /auth/register",
        "POST /auth/login",
        "POST /chats",
        "POST /chats/{chat_id}/messages",
    } <= shown


def test_the_stream_and_the_files_are_described(document: dict[str, Any]) -> None:
    send = document["paths"]["/chats/{chat_id}/messages"]["post"]["responses"]
    assert list(send["201"]["content"]) == ["application/json"]
    stream = send["200"]["content"]["text/event-stream"]
    events = {name: ref["$ref"].rsplit("/", 1)[1] for name, ref in stream["x-events"].items()}
    assert list(events) == [
        "user_message",
        "assistant_message",
        "delta",
        "done",
        "stopped",
        "error",
    ]
    schemas = document["components"]["schemas"]
    delta = schemas["EventDelta"]["properties"]
    assert delta["id"]["pattern"] == "^[0-9]+:[0-9]+$"
    assert "id" not in schemas["EventDone"]["properties"]
    resume = document["paths"]["/chats/{chat_id}/messages/{message_id}/stream"]["get"]
    assert list(resume["responses"]["200"]["content"]) == ["application/json", "text/event-stream"]
    assert {p["name"] for p in resume["parameters"]} >= {"Last-Event-ID", "offset"}
    stop = document["paths"]["/chats/{chat_id}/stop"]["post"]["responses"]
    assert set(stop) >= {"200", "401", "404"}
    for component in events.values():
        assert component in schemas
        assert f"(#/components/schemas/{component})" in stream["schema"]["description"]
    error = schemas["EventError"]["properties"]
    assert error["event"]["enum"] == ["error"]
    assert error["data"] == {"$ref": "#/components/schemas/Problem"}

    upload = document["paths"]["/upload"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    download = document["paths"]["/uploads/{filename}"]["get"]["responses"]["200"]["content"]
    assert set(download) == {"image/jpeg", "image/png", "image/gif", "image/webp"}


async def test_a_problem_on_the_wire_matches_the_problem_schema(
    document: dict[str, Any], tmp_path: Path
) -> None:
    settings = load_settings({"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None)
    problem_schema = {"$ref": "#/components/schemas/Problem"}
    async with AsyncTestClient(create_app(memory_container(settings))) as client:
        for response in (
            await client.get("/chats"),  # 401
            await client.post("/auth/login", json={"email": 1}),  # 422 with errors
            await client.get("/no/such/route"),  # 404
        ):
            body = response.json()
            schema_validator(document, problem_schema).validate(body)
            assert body["type"] == "about:blank"
            assert body["instance"] == response.request.url.path


async def test_options_names_every_documented_method_of_a_path(
    document: dict[str, Any], tmp_path: Path
) -> None:
    """Litestar 2 named only the first handler's methods (litestar#4169); web.edge
    repairs it."""
    settings = load_settings({"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None)
    async with AsyncTestClient(create_app(memory_container(settings))) as client:
        for path, item in document["paths"].items():
            concrete = path.replace("{chat_id}", "1").replace("{user_id}", "1")
            concrete = concrete.replace("{session_id}", "1").replace("{file_id}", "1")
            concrete = concrete.replace("{filename}", "a.png").replace("{message_id}", "1")
            response = await client.options(concrete)
            assert response.status_code == 204, path
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == {m.upper() for m in item} | {"OPTIONS"}, path
