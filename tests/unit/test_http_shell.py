"""The HTTP shell over in-memory adapters: error shapes, health, docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from gemini_core.errors import ConflictError, UnavailableError
from web.app import create_app
from web.composition import memory_container
from web.json_body import JsonBodyRequest, is_json
from web.problems import EXCEPTION_HANDLERS
from web.settings import Settings, load_settings


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path), **env}, env_file=None
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(memory_container(settings_for(tmp_path)))
    async with AsyncTestClient(app) as client:
        yield client


def assert_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def test_health_has_the_guides_shape(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp", "version", "environment", "services"}
    assert body["status"] == "healthy"
    assert body["environment"] == "test"
    assert body["timestamp"].endswith("Z")
    services = body["services"]
    assert services["database"]["status"] == "healthy"
    assert isinstance(services["database"]["response_time_ms"], float)
    assert services["rate_limiting"] == {
        "status": "healthy",
        "stats": {"total_identifiers": 0, "total_requests": 0},
    }
    assert services["cache"] == {
        "status": "healthy",
        "stats": {"total_keys": 0, "expired_keys": 0},
    }


async def test_health_database_reports_the_pool(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health/database")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert isinstance(body["pool"], dict)


async def test_unknown_route_is_a_404_problem(client: AsyncTestClient[Litestar]) -> None:
    assert_problem(await client.get("/no/such/route"), 404)


async def test_wrong_method_is_a_405_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/health")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_docs_are_served_in_development(tmp_path: Path) -> None:
    app = create_app(memory_container(settings_for(tmp_path, ENVIRONMENT="development")))
    async with AsyncTestClient(app) as client:
        schema = await client.get("/schema/openapi.json")
        assert schema.status_code == 200
        assert "/health" in schema.json()["paths"]
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")


async def test_docs_are_not_served_when_disabled(tmp_path: Path) -> None:
    app = create_app(memory_container(settings_for(tmp_path, DOCS_ENABLED="false")))
    async with AsyncTestClient(app) as client:
        for page in ("/schema/openapi.json", "/docs", "/redoc", "/docs/assets/swagger-ui.css"):
            assert_problem(await client.get(page), 404)


# --- the error mapping, on a probe route --------------------------------------


class Inner(msgspec.Struct):
    email: str
    age: int


class Probe(msgspec.Struct):
    name: str
    user: Inner


@post("/probe", sync_to_thread=False)
def probe(data: JSONBody[Probe]) -> dict[str, str]:
    if data.name == "conflict":
        raise ConflictError("That name is taken.", field="name")
    if data.name == "down":
        raise UnavailableError("The database is unavailable.", retry_after=7)
    if data.name == "boom":
        raise RuntimeError("secret internals at /srv/app.py line 3")
    return {"ok": data.name}


@pytest.fixture
async def probe_client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = Litestar([probe], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app) as client:
        yield client


async def test_malformed_json_is_a_400(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.post(
        "/probe", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400)
    assert "not valid JSON" in str(body["detail"])


async def test_schema_violations_are_a_422_listing_fields(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    response = await probe_client.post(
        "/probe", json={"name": "x", "user": {"email": "a", "age": "old"}}
    )
    body = assert_problem(response, 422)
    assert body["errors"] == [{"field": "user.age", "message": "Expected `int`, got `str`"}]
    missing = await probe_client.post("/probe", json={"user": {"email": "a", "age": 1}})
    body = assert_problem(missing, 422)
    assert body["errors"] == [{"field": "name", "message": "This field is required."}]
    nested = await probe_client.post("/probe", json={"name": "x", "user": {"age": 1}})
    body = assert_problem(nested, 422)
    assert body["errors"] == [{"field": "user.email", "message": "This field is required."}]
    not_an_object = await probe_client.post("/probe", json=[1])
    body = assert_problem(not_an_object, 422)
    assert body["errors"] == [{"field": "body", "message": "Expected `object`, got `array`"}]


async def test_core_errors_map_to_their_status(probe_client: AsyncTestClient[Litestar]) -> None:
    user = {"email": "a", "age": 1}
    assert_problem(await probe_client.post("/probe", json={"name": "conflict", "user": user}), 409)
    down = await probe_client.post("/probe", json={"name": "down", "user": user})
    assert_problem(down, 503)
    assert down.headers["retry-after"] == "7"


async def test_unexpected_errors_never_leak_internals(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    response = await probe_client.post(
        "/probe", json={"name": "boom", "user": {"email": "a", "age": 1}}
    )
    body = assert_problem(response, 500)
    assert "srv" not in response.text
    assert "Traceback" not in response.text
    assert "secret" not in str(body)


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("text/json+xml", False),
        ("", False),
    ],
)
def test_only_json_media_types_are_read_as_json(media_type: str, expected: bool) -> None:
    assert is_json(media_type) is expected


async def test_a_json_route_refuses_a_body_that_is_not_json(
    client: AsyncTestClient[Litestar],
) -> None:
    body = b'{"email": "ann@example.com", "purpose": "email_verification"}'
    for headers in ({"Content-Type": "text/plain"}, {}):
        response = await client.post("/auth/send-otp", content=body, headers=headers)
        assert_problem(response, 415)
    nested = b'{"email": ' + b"[" * 2_000 + b"]" * 2_000 + b"}"
    response = await client.post(
        "/auth/send-otp", content=nested, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)


class Typed(msgspec.Struct):
    flag: bool
    ids: list[int]


@post("/typed", sync_to_thread=False)
def typed(data: JSONBody[Typed]) -> dict[str, object]:
    return {"flag": data.flag, "ids": data.ids}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"flag": 0, "ids": []}, "flag"),  # Litestar alone would read 0 as false
        ({"flag": True, "ids": ["1"]}, "ids[0]"),  # ... and "1" as 1
        ({"flag": True, "ids": [1.5]}, "ids[0]"),
    ],
)
async def test_a_json_body_is_read_with_its_own_types(body: dict[str, object], field: str) -> None:
    app = Litestar([typed], exception_handlers=EXCEPTION_HANDLERS, request_class=JsonBodyRequest)
    async with AsyncTestClient(app) as client:
        problem = assert_problem(await client.post("/typed", json=body), 422)
        assert problem["errors"] == [{"field": field, "message": problem["errors"][0]["message"]}]  # type: ignore[index]
        accepted = await client.post("/typed", json={"flag": False, "ids": [2.0, 3]})
        assert accepted.json() == {"flag": False, "ids": [2, 3]}  # 2.0 is an integer in JSON
