"""Rate limits, enforced by a pure ASGI middleware on every route but health and metrics.

- The default limit (``RATE_LIMIT_REQUESTS`` per ``RATE_LIMIT_WINDOW_SECONDS``)
  counts every request of a client address.
- The sign-in routes (login, code sending, registration, password reset) also
  count against the tighter ``AUTH_RATE_LIMIT_*`` limit twice: once per client
  address and once per email address in the body, so neither many guesses
  from one client nor guesses at one account from many clients get far. The
  middleware reads the (small) JSON body for the email and hands the same
  bytes on to the handler.

The middleware runs per route (Litestar app middleware), after routing, so it
knows the route template, and inside CORS, so a browser can read its 429.
A refused request gets a 429 problem with ``Retry-After``; every limited
response carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` for the limit nearest to refusing.

A limiter that fails (Redis unreachable, a bug) must not take the service
down: the request goes through, and a warning is logged at most once a minute.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from gemini_core.ports import RateLimitDecision, RateLimiter
from web.metrics import Metrics
from web.middleware import ASGIApp, Message, Receive, Scope, Send
from web.problems import PROBLEM_JSON, problem
from web.settings import Settings

__all__ = ["AUTH_ROUTES", "EXEMPT_ROUTES", "RateLimitMiddleware", "RateLimitPolicy"]

log = logging.getLogger(__name__)

EXEMPT_ROUTES = frozenset({"/health", "/health/database", "/metrics"})
AUTH_ROUTES = frozenset({"/auth/login", "/auth/send-otp", "/auth/register", "/auth/reset-password"})
# Sign-in bodies are a few hundred bytes; a bigger one is not read for its email
# (the handler's own body limit deals with it).
MAX_EMAIL_BODY = 16 * 1024
WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    requests: int
    window_seconds: int


class RateLimitPolicy:
    """The limits from the settings, and the fail-open bookkeeping they share."""

    def __init__(
        self,
        *,
        enabled: bool,
        default: Limit,
        auth_client: Limit,
        auth_email: Limit,
        metrics: Metrics | None = None,
    ) -> None:
        self.enabled = enabled
        self.default = default
        self.auth_client = auth_client
        self.auth_email = auth_email
        self.metrics = metrics
        self._quiet_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> RateLimitPolicy:
        auth = (settings.auth_rate_limit_requests, settings.auth_rate_limit_window_seconds)
        return cls(
            enabled=settings.rate_limit_enabled,
            default=Limit(
                "default", settings.rate_limit_requests, settings.rate_limit_window_seconds
            ),
            auth_client=Limit("auth_client", *auth),
            auth_email=Limit("auth_email", *auth),
            metrics=metrics,
        )

    async def check(self, limiter: RateLimiter, limit: Limit, key: str) -> RateLimitDecision | None:
        """Count one request; ``None`` when the limiter failed (the request goes through)."""
        try:
            decision = await limiter.hit(
                f"{limit.name}:{key}", limit=limit.requests, window_seconds=limit.window_seconds
            )
        except Exception as exc:
            self._failed(exc)
            if self.metrics is not None:
                self.metrics.observe_rate_limit(limit.name, "failed_open")
            return None
        if self.metrics is not None:
            outcome = "allowed" if decision.allowed else "refused"
            self.metrics.observe_rate_limit(limit.name, outcome)
        return decision

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + WARN_EVERY_SECONDS
            log.warning(
                "rate limiter failed (%s: %s); letting requests through unlimited",
                type(exc).__name__,
                exc,
            )


class _EmailOnly(msgspec.Struct):
    email: str | None = None


_email_decoder = msgspec.json.Decoder(_EmailOnly)


def _email_key(body: bytes) -> str | None:
    try:
        email = _email_decoder.decode(body).email
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not email or not email.strip():
        return None
    # Hashed: the limiter's keys (in Redis, perhaps) need not hold addresses.
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's body messages, and the whole body when it is small."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_EMAIL_BODY:
            return messages, None
        chunks.append(chunk)
        if not message.get("more_body"):
            return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


def _nearest(decisions: list[RateLimitDecision]) -> RateLimitDecision | None:
    """The decision to report: a refusal, else the one with the least left."""
    chosen: RateLimitDecision | None = None
    for decision in decisions:
        if not decision.allowed:
            return decision
        if chosen is None or decision.remaining < chosen.remaining:
            chosen = decision
    return chosen


def _headers(decision: RateLimitDecision) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_after).encode()),
    ]


_encode_problem = msgspec.json.Encoder().encode


class RateLimitMiddleware:
    """``limiter`` gives the limiter to count with: it exists once the
    application has started, after this middleware was made."""

    def __init__(
        self, app: ASGIApp, *, policy: RateLimitPolicy, limiter: Callable[[], RateLimiter]
    ) -> None:
        self.app = app
        self._policy = policy
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("path_template")
        if scope["type"] != "http" or not self._policy.enabled or route in EXEMPT_ROUTES:
            await self.app(scope, receive, send)
            return
        policy = self._policy
        limiter = self._limiter()
        client = scope.get("client")
        address = client[0] if client else "unknown"

        decisions: list[RateLimitDecision] = []
        go_on = await self._count(limiter, policy.default, address, decisions)
        sign_in = route in AUTH_ROUTES and scope["method"] == "POST"
        if go_on and sign_in and await self._count(limiter, policy.auth_client, address, decisions):
            messages, body = await _read_body(receive)
            receive = _replay(messages, receive)
            email = _email_key(body) if body else None
            if email is not None:
                await self._count(limiter, policy.auth_email, email, decisions)

        reported = _nearest(decisions)
        if reported is None:
            await self.app(scope, receive, send)
        elif not reported.allowed:
            await self._refuse(reported, send)
        else:
            await self.app(scope, receive, self._with_headers(send, _headers(reported)))

    async def _count(
        self, limiter: RateLimiter, limit: Limit, key: str, decisions: list[RateLimitDecision]
    ) -> bool:
        """Count the request against ``limit``; whether it may still go on."""
        decision = await self._policy.check(limiter, limit, key)
        if decision is None:  # failed open
            return True
        decisions.append(decision)
        return decision.allowed

    @staticmethod
    def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*(message.get("headers") or ()), *extra]
            await send(message)

        return send_with_headers

    @staticmethod
    async def _refuse(decision: RateLimitDecision, send: Send) -> None:
        seconds = decision.retry_after
        unit = "second" if seconds == 1 else "seconds"
        body = _encode_problem(problem(429, f"Too many requests; try again in {seconds} {unit}."))
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(seconds).encode()),
            *_headers(decision),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
