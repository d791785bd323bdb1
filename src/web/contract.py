"""The published contract: what the OpenAPI document says beyond what Litestar derives.

Litestar documents each operation's success response and the schemas of its bodies.
This module completes the document in one place, so a new route cannot forget any of it:

- every error a route can answer, as a shared ``Problem`` under
  ``application/problem+json``. Most are derived from what the route is: signed in (it
  depends on ``principal``) -> 401; a JSON body -> 400, 413, 415, 422; parameters -> 422;
  an id in the path -> 404; rate limited -> 429; anything but ``/metrics`` -> 503. The
  rest are the core errors a route declares with ``documents(raises=...)``, turned into
  statuses by the same map the exception handlers use;
- the bearer scheme, referenced by every signed-in operation (``security: []`` on the
  public ones);
- the headers every response carries, and ``Retry-After`` / ``WWW-Authenticate``;
- what Litestar cannot infer from a signature: request examples, a multipart body, a
  binary response, the events of a Server-Sent Events stream (``documents(...)``).

The document is completed once, on the first request for it, and served from then on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

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
from web.principal import signed_in
from web.problems import PROBLEM_JSON, Problem, status_of
from web.ratelimiting import EXEMPT_ROUTES

__all__ = ["BEARER", "ContractJsonPlugin", "complete_document", "documents"]

BEARER = "bearer"
_OPT_KEY = "contract"
_PROBLEM_REF = "#/components/schemas/Problem"

# Why each core error answers what it does; one line each in the document.
_REASONS: dict[type[GeminiError], str] = {
    InvalidInputError: "A field breaks a rule; `errors` names it.",
    VerificationFailedError: "The code or password given did not verify.",
    AuthenticationError: "No valid credentials.",
    PermissionDeniedError: "Signed in, but not allowed.",
    NotFoundError: "No such resource for this caller.",
    ConflictError: "It conflicts with the current state.",
    PayloadTooLargeError: "The upload is over the size limit.",
    UnsupportedMediaTypeError: "Not a JPEG, PNG, GIF or WebP image, judged by its bytes.",
    TooManyRequestsError: "Too many requests for now; see `Retry-After`.",
    UnavailableError: "A dependency (the database, the mail server, storage) is down; "
    "see `Retry-After`.",
    UpstreamError: "The model failed.",
    UpstreamTimeoutError: "The model did not answer in time.",
    UpstreamQuotaError: "The model's provider refused for quota; see `Retry-After`.",
    QuotaExceededError: "A daily quota is used up until `resets_at` (next UTC midnight); "
    "`quota` and `used` say how much; see `Retry-After`.",
}


def _reason(error: type[GeminiError]) -> str:
    """Why ``error`` is answered, from the nearest class that says; with its ``type``."""
    reason = next(_REASONS[cls] for cls in error.__mro__ if cls in _REASONS)
    return f"{reason} (`type`: `{error.kind}`)" if error.kind else reason


class _Declared(msgspec.Struct, frozen=True):
    raises: tuple[type[GeminiError], ...] = ()
    example: Any = None
    body: Mapping[str, Any] | None = None  # a request body Litestar cannot see
    binary: tuple[str, ...] = ()  # the media types of a binary success response
    events: Mapping[str, type[msgspec.Struct]] | None = None  # SSE event -> its data


def documents(
    *,
    raises: Iterable[type[GeminiError]] = (),
    example: Any = None,
    body: Mapping[str, Any] | None = None,
    binary: Iterable[str] = (),
    events: Mapping[str, type[msgspec.Struct]] | None = None,
) -> dict[str, Any]:
    """A route's (or controller's) ``opt``: what the document cannot derive from it.

    ``raises``: the core errors it answers besides the derived ones; ``example``: a
    request body to show; ``body``: a request body schema by media type; ``binary``: the
    media types of a binary success; ``events``: its Server-Sent Events and their data.
    """
    declared = _Declared(tuple(raises), example, body, tuple(binary), events)
    return {_OPT_KEY: declared}


class ContractJsonPlugin(JsonRenderPlugin):
    """Serves the document at ``/schema/openapi.json``, completed on first use."""

    def __init__(self, *, path: str, models: Sequence[str]) -> None:
        super().__init__(path=path)
        self._models = tuple(models)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        complete_document(request.app, openapi_schema, models=self._models)
        return super().render(request, openapi_schema)


def complete_document(
    app: Litestar, document: dict[str, Any], *, models: Sequence[str] = ()
) -> None:
    """Complete Litestar's ``document`` of ``app`` in place; a second call does nothing.
    ``models``: the server's models, the values a request's ``model`` field may take."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if "Problem" in schemas:
        return
    schemas.update(_struct_schemas(Problem))
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The `access_token` from register, login or refresh.",
        }
    }
    components["headers"] = _HEADERS
    if models:
        _name_the_models(schemas, models)
    for name, schema in schemas.items():
        if name.endswith("In"):
            _bound_integers(schema)
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            path_item = document.get("paths", {}).get(route.path_format or "/", {})
            for method in handler.http_methods:
                if operation := path_item.get(method.lower()):
                    _complete_operation(
                        operation,
                        schemas,
                        path=route.path_format,
                        signed_in=signed_in(handler),
                        declared=_declared(handler),
                        body_optional=_body_is_optional(handler),
                        explicit={str(status) for status in handler.responses or {}},
                    )


def _body_is_optional(handler: HTTPRouteHandler) -> bool:
    """Whether the route's ``data`` has a default: then the body may be left out."""
    data = handler.parsed_fn_signature.parameters.get("data")
    return data is not None and data.has_default


def _declared(handler: HTTPRouteHandler) -> _Declared:
    """The handler's declaration (its own, else its controller's), with the errors
    declared on every layer above it added up."""
    nearest: _Declared = handler.opt.get(_OPT_KEY, _Declared())
    raises = {
        error: None
        for layer in handler.ownership_layers
        for error in (layer.opt or {}).get(_OPT_KEY, _Declared()).raises
    }
    return msgspec.structs.replace(nearest, raises=tuple(raises))


def _complete_operation(
    operation: dict[str, Any],
    schemas: dict[str, Any],
    *,
    path: str,
    signed_in: bool,
    declared: _Declared,
    explicit: set[str],
    body_optional: bool = False,
) -> None:
    """Complete one operation; the responses a handler declares itself (``explicit``) stay."""
    operation["security"] = [{BEARER: []}] if signed_in else []
    if declared.body is not None:
        operation["requestBody"] = {"required": True, "content": dict(declared.body)}
    body = operation.get("requestBody")
    if body is not None and body_optional:
        body["required"] = False
    if declared.example is not None and body is not None:
        for media in body["content"].values():
            media["examples"] = {"example": {"value": declared.example}}

    responses: dict[str, Any] = operation.setdefault("responses", {})
    if declared.events and not any(
        "text/event-stream" in response.get("content", {}) for response in responses.values()
    ):
        # One status, two media types (Litestar describes one): the events go
        # beside the JSON of the 200.
        responses["200"].setdefault("content", {})["text/event-stream"] = {}
    for status, response in list(responses.items()):
        if not status.startswith("2") and status not in explicit:
            del responses[status]  # Litestar's own error shape: replaced below
        elif declared.binary:
            binary = {"schema": {"type": "string", "format": "binary"}}
            response["content"] = dict.fromkeys(declared.binary, binary)
        elif declared.events and any(m == "text/event-stream" for m in response["content"]):
            response["content"]["text/event-stream"] = _event_stream(declared.events, schemas)
    reasons: dict[int, list[str]] = {}
    parameters = operation.get("parameters", [])
    for parameter in parameters:
        _bound_integers(parameter["schema"])
    if signed_in:
        reasons.setdefault(401, []).append(
            "Missing, invalid, expired or revoked access token; see `WWW-Authenticate`."
        )
    if declared.body is not None:
        kinds = " or ".join(f"`{media}`" for media in declared.body)
        reasons.setdefault(400, []).append(f"The body is not well-formed {kinds}.")
    if body is not None and declared.body is None:
        reasons.setdefault(400, []).append("The body is not valid JSON.")
        reasons.setdefault(413, []).append("The body is too large.")
        reasons.setdefault(415, []).append("The body is not sent as `application/json`.")
    if body is not None or parameters:
        reasons.setdefault(422, []).append(
            "The request does not match the schema; `errors` names each field."
        )
    if any(p.get("in") == "path" for p in parameters):
        reasons.setdefault(404, []).append("No such resource for this caller.")
    if path not in EXEMPT_ROUTES:
        reasons.setdefault(429, []).append("A rate limit refused it; see `Retry-After`.")
    if path != "/metrics":
        reasons.setdefault(503, []).append(_REASONS[UnavailableError])
    for error in declared.raises:
        reasons.setdefault(status_of(error), []).append(_reason(error))

    for code, why in sorted(reasons.items()):
        if str(code) not in explicit:
            responses[str(code)] = {
                "description": " ".join(dict.fromkeys(why)),
                "content": {PROBLEM_JSON: {"schema": {"$ref": _PROBLEM_REF}}},
            }
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers.update(_EVERY_RESPONSE)
        if status in ("429", "503"):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        elif status == "401":
            headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}


# The events that carry an SSE ``id:`` a client may resume after.
EVENTS_WITH_IDS = frozenset({"delta"})


def _event_stream(
    events: Mapping[str, type[msgspec.Struct]], schemas: dict[str, Any]
) -> dict[str, Any]:
    """The ``text/event-stream`` media type. Each event is a component of its own: the
    frame's ``event`` name and the JSON schema of its ``data``."""
    lines, refs = [], {}
    for event, data in events.items():
        name = "Event" + "".join(word.title() for word in event.split("_"))
        for component, schema in _struct_schemas(data).items():
            schemas.setdefault(component, schema)
        schemas[name] = {
            "type": "object",
            "description": f"The Server-Sent Event `{event}`: `data` is one line of JSON.",
            "properties": {
                "event": {"type": "string", "enum": [event]},
                "data": {"$ref": f"#/components/schemas/{data.__name__}"},
                **(
                    {
                        "id": {
                            "type": "string",
                            "pattern": "^[0-9]+:[0-9]+$",
                            "description": "`<message id>:<offset>`: the answer and the "
                            "characters of it sent so far, this event's included. Send it "
                            "back as `Last-Event-ID` to resume after it.",
                        }
                    }
                    if event in EVENTS_WITH_IDS
                    else {}
                ),
            },
            "required": ["event", "data"],
        }
        refs[event] = {"$ref": f"#/components/schemas/{name}"}
        lines.append(f"- `event: {event}`, described by [{name}](#/components/schemas/{name})")
    return {
        "schema": {
            "type": "string",
            "description": "Server-Sent Events, in this order:\n" + "\n".join(lines),
        },
        "x-events": refs,
    }


def _bound_integers(schema: Any) -> None:
    """Every integer a request carries is stored as a 64-bit one: say so, where nothing
    bounds it already (a larger one is a 422)."""
    if isinstance(schema, list):
        for item in schema:
            _bound_integers(item)
    elif isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema.setdefault("format", "int64")
            schema.setdefault("minimum", -(2**63))
            schema.setdefault("maximum", 2**63 - 1)
        for value in schema.values():
            _bound_integers(value)


def _name_the_models(schemas: dict[str, Any], models: Sequence[str]) -> None:
    """A request body's ``model`` field takes one of ``models`` (else the core's 422)."""
    for name, schema in schemas.items():
        field = schema.get("properties", {}).get("model") if name.endswith("In") else None
        if field is not None:
            choice = {"type": "string", "enum": list(models)}
            nullable = any(arm.get("type") == "null" for arm in field.get("oneOf", ()))
            schema["properties"]["model"] = (
                {"oneOf": [choice, {"type": "null"}]} if nullable else choice
            )


def _struct_schemas(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """JSON Schema components for ``struct`` and the structs it holds (OpenAPI 3.1 reads
    JSON Schema 2020-12, which msgspec writes)."""
    _, components = msgspec.json.schema_components(
        [struct], ref_template="#/components/schemas/{name}"
    )
    return components


_HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The caller's request id when it sent a sane one, else a new UUID.",
        "schema": {"type": "string"},
    },
    "X-Process-Time": {
        "description": "Milliseconds the server spent on the request.",
        "schema": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
    },
    "Retry-After": {
        "description": "Whole seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme to authenticate with.",
        "schema": {"type": "string"},
    },
}
_EVERY_RESPONSE: dict[str, Any] = {
    "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
    "X-Process-Time": {"$ref": "#/components/headers/X-Process-Time"},
}
