"""RFC 9457 problem details for every error, in one place.

The core's errors map to statuses by class; Litestar's own HTTP errors keep
their status; anything else is a 500 that logs the stack trace and shows the
caller only a generic sentence and the request id.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_502_BAD_GATEWAY,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_504_GATEWAY_TIMEOUT,
)
from litestar.types import ExceptionHandlersMap

from gemini_core.errors import (
    AuthenticationError,
    ConflictError,
    GeminiError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    TooManyRequestsError,
    UnavailableError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamQuotaError,
    UpstreamTimeoutError,
    VerificationFailedError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
ABOUT_BLANK = "about:blank"

_STATUS_BY_ERROR: dict[type[GeminiError], int] = {
    InvalidInputError: HTTP_422_UNPROCESSABLE_ENTITY,
    VerificationFailedError: HTTP_400_BAD_REQUEST,
    AuthenticationError: HTTP_401_UNAUTHORIZED,
    PermissionDeniedError: HTTP_403_FORBIDDEN,
    NotFoundError: HTTP_404_NOT_FOUND,
    ConflictError: HTTP_409_CONFLICT,
    PayloadTooLargeError: HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaTypeError: HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    TooManyRequestsError: HTTP_429_TOO_MANY_REQUESTS,
    UnavailableError: HTTP_503_SERVICE_UNAVAILABLE,
    UpstreamError: HTTP_502_BAD_GATEWAY,
    UpstreamTimeoutError: HTTP_504_GATEWAY_TIMEOUT,
    UpstreamQuotaError: HTTP_429_TOO_MANY_REQUESTS,
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response (RFC 9457). `type` is `about:blank`: the status
    says what kind of problem it is. `instance` is the path of the request, when there
    was one; `errors` names each field a 422 refused."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | msgspec.UnsetType = msgspec.UNSET
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET
    quota: int | msgspec.UnsetType = msgspec.UNSET
    """`quota-exceeded`: the daily limit reached (answers, or tokens)."""
    used: int | msgspec.UnsetType = msgspec.UNSET
    """`quota-exceeded`: what the day has used of it."""
    resets_at: datetime | msgspec.UnsetType = msgspec.UNSET
    """`quota-exceeded`: when the quota resets (the next UTC midnight)."""


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    kind: str | None = None,
) -> Problem:
    """The problem of `status`, titled by it; `kind` is its `type` when it has one."""
    return Problem(
        type=kind or ABOUT_BLANK,
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=msgspec.UNSET if instance is None else instance,
        errors=msgspec.UNSET if errors is None else errors,
    )


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
) -> Response[Problem]:
    return Response(
        problem(status, detail, instance=request.scope["path"], errors=errors, kind=kind),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def status_of(error: type[GeminiError]) -> int:
    """The status that answers ``error``, by the nearest class in the map."""
    for cls in error.__mro__:
        if cls in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[cls]
    return HTTP_500_INTERNAL_SERVER_ERROR


def problem_for(exc: GeminiError) -> Problem:
    """The body ``handle_core_error`` would answer, for an error that arrives after
    a response has started (an ``error`` event in a stream)."""
    return problem(status_of(type(exc)), exc.detail, kind=exc.kind)


def handle_core_error(request: Request[Any, Any, Any], exc: GeminiError) -> Response[Problem]:
    status = status_of(type(exc))
    headers: dict[str, str] | None = None
    if isinstance(exc, TooManyRequestsError | UnavailableError | UpstreamQuotaError):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    errors = None
    if isinstance(exc, InvalidInputError) and exc.field is not None:
        errors = [FieldError(field=exc.field, message=exc.detail)]
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.detail)
    response = problem_response(
        request, status, exc.detail, errors=errors, headers=headers, kind=exc.kind
    )
    if isinstance(exc, QuotaExceededError):
        response.content = msgspec.structs.replace(
            response.content, quota=exc.quota, used=exc.used, resets_at=exc.resets_at
        )
    return response


_MISSING = re.compile(r"Object missing required field `([^`]+)`")


def _field_error(item: dict[str, Any]) -> FieldError:
    """One of Litestar's validation records as ``{"field", "message"}``, where
    ``field`` is a dotted path from the top of the body (or the parameter name)."""
    key = str(item.get("key") or "")
    message, _, at = str(item.get("message") or "Invalid value.").partition(" - at `$")
    # "data" is Litestar's name for the whole body; msgspec says where inside it.
    path = key if key and key != "data" else at.rstrip("`").lstrip(".")
    if missing := _MISSING.fullmatch(message):
        path = f"{path}.{missing[1]}" if path else missing[1]
        message = "This field is required."
    return FieldError(field=path or "body", message=message)


# How Litestar says a required query parameter, header or cookie is missing.
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']*)'")


def _field_errors(extra: Any) -> list[FieldError]:
    items = extra if isinstance(extra, list) else []
    return [_field_error(item) for item in items if isinstance(item, dict)]


def handle_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    detail = exc.detail or _TITLES.get(status, "Error")
    if isinstance(exc.__cause__, SerializationException):
        return problem_response(
            request, HTTP_400_BAD_REQUEST, f"The request body is not valid JSON ({exc.detail})."
        )
    if isinstance(exc, ValidationException):
        errors = _field_errors(exc.extra)
        missing = _MISSING_PARAMETER.match(exc.detail or "")
        if not errors and missing:
            errors = [
                FieldError(field=missing[2], message=f"This {missing[1]} parameter is required.")
            ]
        return problem_response(
            request,
            HTTP_422_UNPROCESSABLE_ENTITY,
            "The request does not match the schema.",
            errors=errors,
        )
    headers = {
        k: v for k, v in (exc.headers or {}).items() if k.lower() in {"allow", "retry-after"}
    }
    if status >= 500:
        detail = _TITLES.get(status, "Error")
    return problem_response(request, status, detail, headers=headers or None)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Something went wrong on our side; it has been logged.",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    GeminiError: handle_core_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "FieldError",
    "Problem",
    "problem",
    "problem_for",
    "problem_response",
    "status_of",
]
