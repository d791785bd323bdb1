"""The middleware over in-memory adapters: request ids, timing, security
headers, gzip, CORS, allowed hosts, body size, and the rate limits."""

from __future__ import annotations

import asyncio
import gzip
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar, Response, get
from litestar.testing import AsyncTestClient

from adapters.clock import SystemClock
from adapters.memory import InMemoryCache, InMemoryDatabaseProbe
from gemini_core.health import HealthService
from gemini_core.ports import RateLimitDecision, RateLimiterStats
from tests.config import production_settings
from web.app import create_app
from web.clientip import ClientAddressResolver
from web.composition import memory_container
from web.middleware import GzipMiddleware, new_request_id
from web.settings import Settings, load_settings

Scope = dict[str, Any]
Message = dict[str, Any]


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path), **env}, env_file=None
    )


def with_peer_header(app: Litestar) -> Litestar:
    """Lets a test choose the direct peer's address with ``X-Test-Peer``
    (Litestar's test client always calls itself ``testclient``)."""
    inner = app.asgi_handler

    async def shim(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-peer":
                    scope["client"] = (value.decode(), 40000)
        await inner(scope, receive, send)

    app.asgi_handler = shim
    return app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(memory_container(settings_for(tmp_path)))
    async with AsyncTestClient(app) as client:
        yield client


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- request id, timing, security headers ------------------------------------


async def test_every_response_has_a_request_id_and_a_process_time(
    client: AsyncTestClient[Litestar],
) -> None:
    for method, path, status in [
        ("GET", "/health", 200),
        ("GET", "/auth/me", 401),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/health", 405),
    ]:
        response = await client.request(method, path)
        assert response.status_code == status
        assert UUID.fullmatch(response.headers["x-request-id"])
        assert re.fullmatch(r"\d+\.\d+", response.headers["x-process-time"])


def test_new_request_ids_are_random_version_4_uuids() -> None:
    made = [new_request_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    # Every random digit takes every value: nothing but the version and variant is fixed.
    for position in (i for i in range(36) if i not in (8, 13, 14, 18, 19, 23)):
        assert len({text[position] for text in made}) == 16, position


@pytest.mark.parametrize("sent", ["abc-123", "A.b_c-9", "x" * 64])
async def test_a_sane_request_id_is_kept(client: AsyncTestClient[Litestar], sent: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["", "x" * 65, "has space", "semi;colon", "ünïcode", "a/b"])
async def test_an_odd_request_id_is_replaced(client: AsyncTestClient[Litestar], sent: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": sent.encode()})
    assert UUID.fullmatch(response.headers["x-request-id"])


async def test_api_responses_carry_the_security_headers(
    client: AsyncTestClient[Litestar],
) -> None:
    for path in ("/health", "/auth/me", "/no/such/route"):
        headers = (await client.get(path)).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "strict-transport-security" not in headers  # production only


async def test_the_docs_pages_get_their_own_policy(client: AsyncTestClient[Litestar]) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        assert "script-src 'self';" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"


async def test_production_adds_hsts(tmp_path: Path) -> None:
    settings = production_settings(tmp_path, RATE_LIMIT_ENABLED="true")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        response = await client.get("/health")
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert (await client.get("/docs")).status_code == 404  # DOCS_ENABLED is off
        assert (await client.get("/metrics")).status_code == 404  # METRICS_ENABLED is off


@get("/own", sync_to_thread=False)
def own_headers() -> Response[str]:
    return Response("x", headers={"X-Content-Type-Options": "nosniff"})


async def test_a_header_the_handler_set_is_not_doubled(tmp_path: Path) -> None:
    app = create_app(memory_container(settings_for(tmp_path)))
    app.register(own_headers)
    async with AsyncTestClient(app) as client:
        response = await client.get("/own")
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]


# --- gzip ---------------------------------------------------------------------


async def test_big_json_is_gzipped_for_clients_that_accept_it(
    client: AsyncTestClient[Litestar],
) -> None:
    plain = await client.get("/schema/openapi.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 1024
    zipped = await client.get("/schema/openapi.json", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert zipped.content == plain.content  # httpx inflated it
    small = await client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def call(app: Callable[..., Awaitable[None]], scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(**headers: str) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


async def test_gzip_never_holds_back_or_touches_an_event_stream() -> None:
    release = asyncio.Event()
    seen_before_release: list[Message] = []
    sent: list[Message] = []

    async def streaming(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: x\n\n" * 500, "more_body": True})
        seen_before_release.extend(sent)
        release.set()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await GzipMiddleware(streaming)(http_scope(accept_encoding="gzip"), receive, send)
    assert release.is_set()
    assert [m["type"] for m in seen_before_release] == ["http.response.start", "http.response.body"]
    assert all(name != b"content-encoding" for name, _ in sent[0]["headers"])


async def test_gzip_passes_a_streamed_textual_body_through_unbuffered() -> None:
    async def streaming(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"y" * 2000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    sent = await call(GzipMiddleware(streaming), http_scope(accept_encoding="gzip"))
    assert [len(m.get("body", b"")) for m in sent[1:]] == [2000, 2000, 2000, 0]
    assert all(name != b"content-encoding" for name, _ in sent[0]["headers"])


async def test_gzip_compresses_a_whole_textual_body() -> None:
    body = b'{"a": "' + b"z" * 5000 + b'"}'

    async def whole(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"5009")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sent = await call(GzipMiddleware(whole), http_scope(accept_encoding="deflate, gzip;q=0.5"))
    headers = dict(sent[0]["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert gzip.decompress(sent[1]["body"]) == body
    assert int(headers[b"content-length"]) == len(sent[1]["body"])
    refused = await call(GzipMiddleware(whole), http_scope(accept_encoding="gzip;q=0"))
    assert refused[1]["body"] == body


# --- CORS, allowed hosts, body size -----------------------------------------------


async def test_cors_lets_the_configured_origin_read_our_headers(tmp_path: Path) -> None:
    origin = "https://app.example.com"
    settings = settings_for(tmp_path, CORS_ORIGINS=origin, RATE_LIMIT_REQUESTS="2")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        preflight = await client.options(
            "/auth/login",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == origin
        for _ in range(2):
            allowed = await client.get("/auth/me", headers={"Origin": origin})
            assert allowed.headers["access-control-allow-origin"] == origin
            exposed = allowed.headers["access-control-expose-headers"].lower()
            assert "x-request-id" in exposed
            assert "retry-after" in exposed
            assert "ratelimit-remaining" in exposed
        refused = await client.get("/auth/me", headers={"Origin": origin})
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == origin
        other = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_allowed_hosts_refuse_other_hosts_but_not_health_probes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ALLOWED_HOSTS="api.example.com")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        for host in ("api.example.com", "API.example.com:8443"):
            assert (await client.get("/auth/me", headers={"Host": host})).status_code == 401
        for path in ("/auth/me", "/no/such/route"):
            bad = await client.get(path, headers={"Host": "evil.example.com"})
            assert bad.status_code == 400
            assert bad.headers["content-type"].startswith("application/problem+json")
            assert bad.headers["x-request-id"]
        probe = await client.get("/health", headers={"Host": "10.0.0.7:8000"})
        assert probe.status_code == 200


async def test_a_json_body_over_one_mib_is_a_413(client: AsyncTestClient[Litestar]) -> None:
    big = b'{"email": "a@example.com", "password": "' + b"x" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/auth/login", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


# --- rate limits ----------------------------------------------------------------


async def test_a_limit_of_ten_admits_exactly_ten_of_a_hundred_at_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="10", RATE_LIMIT_WINDOW_SECONDS="60")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        responses = await asyncio.gather(*(client.get("/auth/me") for _ in range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) == 10
    assert statuses.count(429) == 90
    admitted = [r for r in responses if r.status_code == 401]
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in admitted) == list(range(10))
    for response in admitted:
        assert response.headers["ratelimit-limit"] == "10"
        assert 0 < int(response.headers["ratelimit-reset"]) <= 60
        assert "retry-after" not in response.headers
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]


async def test_retry_after_counts_down_with_the_window(tmp_path: Path) -> None:
    from adapters.memory import FakeClock

    clock = FakeClock()
    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="1", RATE_LIMIT_WINDOW_SECONDS="60")
    app = create_app(memory_container(settings, clock=clock))
    async with AsyncTestClient(app) as client:
        assert (await client.get("/auth/me")).status_code == 401
        assert (await client.get("/auth/me")).headers["retry-after"] == "60"
        clock.advance(seconds=45)
        assert (await client.get("/auth/me")).headers["retry-after"] == "15"
        clock.advance(seconds=15)
        assert (await client.get("/auth/me")).status_code == 401


async def test_health_and_metrics_are_never_limited(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="1")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        for _ in range(5):
            for path in ("/health", "/health/database", "/metrics"):
                response = await client.get(path)
                assert response.status_code == 200
                assert "ratelimit-limit" not in response.headers
        assert (await client.get("/auth/me")).status_code == 401
        assert (await client.get("/auth/me")).status_code == 429


async def test_rate_limit_enabled_false_turns_every_limit_off(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        RATE_LIMIT_ENABLED="false",
        RATE_LIMIT_REQUESTS="1",
        AUTH_RATE_LIMIT_REQUESTS="1",
    )
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        for _ in range(5):
            me = await client.get("/auth/me")
            assert me.status_code == 401
            assert "ratelimit-limit" not in me.headers
            login = await client.post(
                "/auth/login", json={"email": "a@example.com", "password": "wrong password"}
            )
            assert login.status_code == 401


async def test_a_forged_forwarded_for_buys_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="3")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        statuses = [
            (
                await client.get("/auth/me", headers={"X-Forwarded-For": f"198.51.100.{i}"})
            ).status_code
            for i in range(10)
        ]
    assert statuses == [401] * 3 + [429] * 7


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="2", TRUSTED_PROXIES="10.0.0.0/8")
    app = with_peer_header(create_app(memory_container(settings)))
    async with AsyncTestClient(app) as client:

        async def get(peer: str, forwarded: str) -> int:
            headers = {"X-Test-Peer": peer, "X-Forwarded-For": forwarded}
            return (await client.get("/auth/me", headers=headers)).status_code

        # Two clients behind the proxy: two budgets.
        assert [await get("10.0.0.2", "203.0.113.1") for _ in range(3)] == [401, 401, 429]
        assert [await get("10.0.0.2", "203.0.113.2") for _ in range(3)] == [401, 401, 429]
        # A client prepending addresses is still itself: the proxy appended the truth.
        assert await get("10.0.0.2", "192.0.2.77, 203.0.113.1") == 429
        # Not from the proxy: the header is ignored and the peer is the client.
        assert [await get("192.0.2.9", "203.0.113.50") for _ in range(3)] == [401, 401, 429]


async def test_sign_in_routes_have_a_tighter_limit_per_client(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, AUTH_RATE_LIMIT_REQUESTS="3")
    app = create_app(memory_container(settings))
    async with AsyncTestClient(app) as client:
        statuses = []
        for i in range(5):
            body = {"email": f"user{i}@example.com", "password": "wrong password"}
            statuses.append((await client.post("/auth/login", json=body)).status_code)
        assert statuses == [401, 401, 401, 429, 429]
        # Other routes keep the default budget.
        assert (await client.get("/auth/me")).status_code == 401
        send = await client.post(
            "/auth/send-otp", json={"email": "x@example.com", "purpose": "email_verification"}
        )
        assert send.status_code == 429
        assert send.headers["ratelimit-limit"] == "3"


async def test_sign_in_routes_are_limited_per_email_across_clients(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, AUTH_RATE_LIMIT_REQUESTS="3", TRUSTED_PROXIES="10.0.0.1")
    app = with_peer_header(create_app(memory_container(settings)))
    async with AsyncTestClient(app) as client:

        async def login(client_ip: str, email: str) -> int:
            headers = {"X-Test-Peer": "10.0.0.1", "X-Forwarded-For": client_ip}
            body = {"email": email, "password": "wrong password"}
            return (await client.post("/auth/login", json=body, headers=headers)).status_code

        statuses = [await login(f"203.0.113.{i}", "Ann@Example.com") for i in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        # The same address however it is written; another address is not affected.
        assert await login("203.0.113.99", " ann@example.COM ") == 429
        assert await login("203.0.113.99", "bob@example.com") == 401


async def test_the_body_read_for_the_email_still_reaches_the_handler(
    client: AsyncTestClient[Litestar],
) -> None:
    invalid = await client.post("/auth/login", json={"email": "a@example.com"})
    assert invalid.status_code == 422
    assert invalid.json()["errors"] == [{"field": "password", "message": "This field is required."}]
    broken = await client.post(
        "/auth/login", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400


class BrokenLimiter:
    async def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        raise ConnectionError("the limiter is down")

    async def stats(self) -> RateLimiterStats:
        raise ConnectionError("the limiter is down")


async def test_a_broken_limiter_fails_open_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    settings = settings_for(tmp_path, RATE_LIMIT_REQUESTS="1", AUTH_RATE_LIMIT_REQUESTS="1")
    container = memory_container(settings)
    broken = BrokenLimiter()
    health = HealthService(
        database=InMemoryDatabaseProbe(),
        rate_limiter=broken,
        cache=InMemoryCache(clock=SystemClock()),
        clock=SystemClock(),
    )
    container = dataclasses.replace(container, rate_limiter=broken, health=health)
    app = create_app(container)
    async with AsyncTestClient(app) as client:
        for _ in range(5):
            response = await client.get("/auth/me")
            assert response.status_code == 401
            assert "ratelimit-limit" not in response.headers
            login = await client.post(
                "/auth/login", json={"email": "a@example.com", "password": "wrong password"}
            )
            assert login.status_code == 401
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["services"]["rate_limiting"]["status"] == "unhealthy"
    warnings = [r for r in caplog.records if "rate limiter failed" in r.getMessage()]
    assert len(warnings) == 1


# --- the client address ---------------------------------------------------------


def test_the_client_is_the_first_untrusted_hop_from_the_right() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8", "2001:db8::/32"])
    assert resolver.resolve("10.1.1.1", ["203.0.113.5"]) == "203.0.113.5"
    assert resolver.resolve("10.1.1.1", ["192.0.2.1, 203.0.113.5, 10.2.2.2"]) == "203.0.113.5"
    assert resolver.resolve("10.1.1.1", ["192.0.2.1", "203.0.113.5"]) == "203.0.113.5"
    assert resolver.resolve("2001:db8::1", ["203.0.113.5"]) == "203.0.113.5"
    assert resolver.resolve("::ffff:10.0.0.3", ["203.0.113.5"]) == "203.0.113.5"
    # Only trusted hops: the leftmost is the best we know.
    assert resolver.resolve("10.1.1.1", ["10.3.3.3, 10.2.2.2"]) == "10.3.3.3"
    # Garbage in the chain stops the walk at the last hop a proxy vouched for.
    assert resolver.resolve("10.1.1.1", ["203.0.113.5, unknown"]) == "10.1.1.1"
    assert resolver.resolve("10.1.1.1", ["nonsense, 10.2.2.2"]) == "10.2.2.2"
    # An untrusted peer's header is ignored.
    assert resolver.resolve("192.0.2.1", ["203.0.113.5"]) == "192.0.2.1"
    assert resolver.resolve(None, ["203.0.113.5"]) is None
    assert not ClientAddressResolver([]).enabled


addresses = st.ip_addresses(v=4).map(str)


@given(forged=st.lists(st.one_of(addresses, st.text(max_size=12)), max_size=5), real=addresses)
def test_nothing_a_client_prepends_changes_who_it_is(forged: list[str], real: str) -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    if resolver._verdict(real):
        return
    honest = resolver.resolve("10.0.0.1", [real])
    assert honest == real
    chain = ", ".join([*(f.replace(",", "") for f in forged), real])
    assert resolver.resolve("10.0.0.1", [chain]) == real
