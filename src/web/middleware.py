"""Pure ASGI middleware around the whole application, on every request.

``RequestContextMiddleware`` is the outermost layer, so it sees every
response, the 404s and 405s of the router included. It:

- gives the request an id: the caller's ``X-Request-ID`` when it is a short
  token (``[A-Za-z0-9._-]{1,64}``), else a new UUID; the id goes into every log
  record of the request and back in the ``X-Request-ID`` response header;
- refuses a ``Host`` that ``ALLOWED_HOSTS`` does not name (400 problem
  details; any port; ``/health`` is spared, as load balancers probe by address);
- settles the client address (``X-Forwarded-For`` from a trusted proxy only,
  see ``clientip``) and writes it into the scope, so everything after it,
  sessions included, sees the real client;
- adds ``X-Process-Time`` (milliseconds to the response's first byte) and the
  security headers: ``nosniff``, ``DENY`` framing, no referrer, a strict
  Content-Security-Policy (a looser one of their own on the documentation
  pages and their assets), and HSTS in production;
- writes one access record per request on ``gemini.access`` and counts the
  request in the metrics.

``GzipMiddleware`` compresses a complete response body of a textual type from
``minimum_size`` bytes on, for a client that accepts gzip. A streamed body
(more than one body message) is never compressed or held back, and an event
stream is never touched.

Both keep their per-request work to a few dictionary lookups: the header sets
are built once, in the constructor.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from random import getrandbits
from typing import Any

import msgspec

from web.clientip import ClientAddressResolver
from web.logs import RequestContext, request_context
from web.metrics import Metrics
from web.page import PAGE_ASSETS, PAGE_PATH
from web.problems import PROBLEM_JSON, problem

__all__ = ["ASGIApp", "AllowedHosts", "GzipMiddleware", "RequestContextMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("gemini.access")

# A version 4 UUID's fixed bits: its version (4) and variant (10).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random UUID (version 4). A request id is a label, not a secret, so it
    comes from ``random`` (reseeded in each forked worker) rather than the
    kernel: ``uuid.uuid4()`` makes a system call and an object per request."""
    digits = f"{getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
STRICT_CSP = b"default-src 'none'; frame-ancestors 'none'"
HSTS = b"max-age=63072000; includeSubDomains"
# Swagger UI and ReDoc run from files this server ships: scripts from this origin
# only, never inline. ReDoc injects <style> elements (styled-components) and
# runs its search in a worker made from a blob: URL; both pages fetch the OpenAPI
# document, and Swagger's "Try it out" calls the API, on this origin. The
# stylesheets inline their icons as data: images. All else is refused.
DOCS_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; connect-src 'self'; worker-src blob:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PAGES = frozenset({"/docs", "/redoc"})
DOCS_ASSETS = "/docs/assets/"
# The chat page (web.page): its own scripts and styles only, never inline and
# no eval; images from this origin (the signed links) and blob: (a picked
# image, shown before it is sent); calls to the API on this origin. All else
# is refused, so a model's answer that slipped past the sanitiser still could
# not run a script or send anything anywhere.
PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

_PAGE_FILES = PAGE_ASSETS + "/"

UNMATCHED = "unmatched"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: tuple[str, ...] = (),
        allowed_hosts: tuple[str, ...] = ("*",),
        production: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self._resolver = ClientAddressResolver(trusted_proxies)
        self._hosts = None if "*" in allowed_hosts else AllowedHosts(allowed_hosts)
        self._metrics = metrics
        security: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if production:
            security.append((b"strict-transport-security", HSTS))
        self._docs_headers = (*security, (b"content-security-policy", DOCS_CSP))
        self._page_headers = (*security, (b"content-security-policy", PAGE_CSP))
        self._api_headers = (*security, (b"content-security-policy", STRICT_CSP))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id: str | None = None
        host = b""
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"x-request-id":
                if _SANE_REQUEST_ID.fullmatch(value):
                    request_id = value.decode("ascii")
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        if request_id is None:
            request_id = new_request_id()
        client = scope.get("client")
        if forwarded and client and self._resolver.enabled:
            address = self._resolver.resolve(client[0], forwarded)
            if address != client[0]:
                scope["client"] = client = (address, 0)

        path = scope["path"]
        if path == PAGE_PATH or path.startswith(_PAGE_FILES):
            security = self._page_headers
        elif path in DOCS_PAGES or path.startswith(DOCS_ASSETS):
            security = self._docs_headers
        else:
            security = self._api_headers
        ours = (
            (b"x-request-id", request_id.encode("ascii")),
            *security,
        )
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers") or ())
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in ours if h[0] not in present)
                headers.append((b"x-process-time", f"{elapsed:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        app = self.app
        if self._hosts is not None and not self._hosts.allows(host, scope["path"]):
            app = _refuse_host
        context_token = request_context.set(RequestContext(request_id))
        try:
            await app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or UNMATCHED
            method = scope["method"]
            if self._metrics is not None:
                self._metrics.observe_request(method, route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                # The record is made here, not by access_log.info(), which
                # would walk the stack to find where it was called from (this
                # line, always): a tenth of a simple request.
                record = access_log.makeRecord(
                    access_log.name,
                    logging.INFO,
                    __file__,
                    sys._getframe().f_lineno,
                    "%s %s %d %.1fms",
                    (method, scope["path"], status, seconds * 1000),
                    None,
                    "__call__",
                    {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
                access_log.handle(record)
            request_context.reset(context_token)


_HOST = re.compile(rb"(\[[0-9a-f:.]*\]|[^:\[\]]*)(:[0-9]*)?")  # name or [IPv6], then a port


class AllowedHosts:
    """``ALLOWED_HOSTS``: names (``api.example.com``) and wildcards
    (``*.example.com``) the ``Host`` header may carry, with any port. Health
    checks pass whatever their host: load balancers probe by address."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        names = {h.lower().strip("[]").rstrip(".") for h in hosts}
        self._exact = frozenset(n.encode() for n in names if not n.startswith("*."))
        self._suffixes = tuple(n[1:].encode() for n in names if n.startswith("*."))

    def allows(self, host: bytes, path: str) -> bool:
        if path.startswith("/health"):
            return True
        match = _HOST.fullmatch(host.lower())
        name = match[1].strip(b"[]").rstrip(b".") if match else b""
        return name in self._exact or (bool(name) and name.endswith(self._suffixes))


_BAD_HOST = msgspec.json.encode(problem(400, "This host name is not served here."))


async def _refuse_host(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(_BAD_HOST)).encode()),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": _BAD_HOST})


_TEXTUAL = re.compile(
    rb"\s*(text/(?!event-stream)[^;]*|application/([a-z0-9.+-]*\+)?(json|xml|javascript)"
    rb"|image/svg\+xml)\s*(;.*)?",
    re.IGNORECASE,
)


def _accepts_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"accept-encoding":
            for item in value.lower().split(b","):
                coding, _, params = item.strip().partition(b";")
                if coding in (b"gzip", b"*"):
                    return params.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00")
    return False


class GzipMiddleware:
    """Gzip for whole textual bodies from ``minimum_size`` bytes on."""

    def __init__(self, app: ASGIApp, *, minimum_size: int = 1024, level: int = 6) -> None:
        self.app = app
        self._minimum_size = minimum_size
        self._level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _accepts_gzip(scope["headers"]):
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def send_compressed(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                if self._may_compress(message):
                    held = message  # until the body shows whether it is whole
                    return
            elif held is not None and message["type"] == "http.response.body":
                start, held = held, None
                body = message.get("body", b"")
                if not message.get("more_body") and len(body) >= self._minimum_size:
                    message["body"] = body = self._compress(body)
                    headers = [
                        (n, v)
                        for n, v in start.get("headers") or ()
                        if n.lower() != b"content-length"
                    ]
                    headers += [
                        (b"content-encoding", b"gzip"),
                        (b"content-length", str(len(body)).encode()),
                        (b"vary", b"Accept-Encoding"),
                    ]
                    start["headers"] = headers
                await send(start)
            await send(message)

        await self.app(scope, receive, send_compressed)

    def _may_compress(self, start: Message) -> bool:
        textual = False
        for name, value in start.get("headers") or ():
            lowered = name.lower()
            if lowered == b"content-encoding":
                return False
            if lowered == b"content-length" and int(value) < self._minimum_size:
                return False
            if lowered == b"content-type":
                textual = _TEXTUAL.fullmatch(value) is not None
        return textual

    def _compress(self, body: bytes) -> bytes:
        compressor = zlib.compressobj(self._level, zlib.DEFLATED, 31)  # 31: a gzip wrapper
        return compressor.compress(body) + compressor.flush()
