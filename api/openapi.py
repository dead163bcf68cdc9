"""The OpenAPI document: what litestar generates, completed with what it cannot know about this API
(who may call each operation, the problems it answers with, request bodies that refuse unknown
fields), and the docs UI served from an installed package rather than a CDN."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from litestar import Litestar
from litestar._openapi.schema_generation import SchemaCreator
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from litestar.typing import FieldDefinition

from api.auth import members_only, terminals_only
from api.deps import AnyRequest
from schemas import base
from schemas.base import EDGE_TYPES, BirthDate, Day, Instant
from schemas.outbox import EVENT_TYPES, envelope_type

DOCS_PATH = "/schema"
ASSETS_PATH = "/schema/assets"

DESCRIPTION = """\
The loyalty programme's API: members in the brand's app, store terminals at the till, staff.

**Who calls.** `Authorization: Bearer <credential>`: a member's or a staff member's access token
(from `/v1/auth/member/login` or `/v1/auth/staff/login`; a staff token carries its role), or a
store terminal's API key (`lk_…`). Each operation says which it takes.

**Errors** are `application/problem+json` (RFC 9457) with a stable `type`
(`urn:loyalty:problem:<code>`), a `detail` that says what to do, the `field` it is about when
there is one, and the `request_id` of the exchange. **400** `validation_failed` means the
request does not match this document (a type, a length, a pattern, a missing or unknown field;
`errors` lists each); **422** means it matches, but a rule of the programme refuses it (a phone
number that does not exist, a total its lines do not add up to). 429 and 503 say `Retry-After`.

**Writes happen once.** Send `Idempotency-Key` with a write: a retry with the same key and body
gets the first answer again (`Idempotent-Replayed: true`); the same key with another body is 422.

**Lists** are pages: pass `next_cursor` back as `cursor` until it is null.
"""

_SCHEMES = {
    "member": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "A member's access token (15 minutes; refresh with "
                              "/v1/auth/refresh)."},
    "staff": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
              "description": "A staff access token; its role decides what it may do."},
    "terminal": {"type": "http", "scheme": "bearer", "bearerFormat": "lk_ API key",
                 "description": "A store terminal's API key, shown once when it is made."},
    "metrics": {"type": "http", "scheme": "bearer",
                "description": "LOYALTY_METRICS_TOKEN, for the Prometheus scraper."},
}
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:loyalty:problem:<code>, stable"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What happened and what to do next"},
        "field": {"type": "string", "description": "The field the problem is about"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "Each place the request does not match the schema (400)"},
    },
}
_ERRORS = {
    400: "The request does not match this document (see `errors`).",
    401: "No credential, or one that is wrong, expired or revoked.",
    403: "The credential is good but may not do this.",
    404: "Nothing has this id, or it is not the caller's to see.",
    409: "It clashes with what is stored: a duplicate, a state that does not allow it.",
    413: "The body is larger than the service accepts.",
    415: "The body is not JSON in UTF-8: send Content-Type: application/json.",
    422: "Well-formed, but a rule of the programme refuses it; `type` says which.",
    429: "Too many requests: wait `Retry-After` seconds.",
    503: "A dependency failed mid-request; nothing was written: retry after `Retry-After`.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                                "schema": {"type": "integer"}}}
S = TypeVar("S", bound=msgspec.Struct)
_GENERIC_NAME = re.compile(r"^(\w+)_schemas\.\w+\.(\w+)_$")

_EDGE_SCHEMAS = {
    Instant: Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME,
                    description="RFC 3339 with its UTC offset, from 2000-01-01 up to 2100-01-01",
                    examples=["2026-11-23T12:00:00+09:00"]),
    Day: Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE,
                description="a day from 2000-01-01 up to 2100-01-01", examples=["2026-11-23"]),
    BirthDate: Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE,
                      description="a day from 1900-01-01 up to today", examples=["1990-04-01"]),
}


class BoundedTypesPlugin(OpenAPISchemaPlugin):
    """The bounded dates and times of ``schemas.base`` as the strings they are on the wire."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value in EDGE_TYPES

    def to_openapi_schema(self, field_definition: FieldDefinition,
                          schema_creator: SchemaCreator) -> Schema:
        return _EDGE_SCHEMAS[field_definition.annotation]


# -- completing the document ------------------------------------------------------------------


def complete(document: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """Add to litestar's document, in place and once: security, problems, closed request bodies,
    names a client generator can use."""
    components = document.setdefault("components", {})
    if "securitySchemes" in components:
        return document
    document["info"]["description"] = DESCRIPTION
    _rename_generics(document)
    components["securitySchemes"] = _SCHEMES
    components.setdefault("schemas", {})["Problem"] = _PROBLEM
    for operation, handler, route in _operations(document, app):
        _secure(operation, handler)
        _problems(operation, handler, route)
    _close_inputs(components["schemas"])
    _exactly_one(components["schemas"])
    _webhooks(document)
    _numbers_may_be_integers(document)
    return document


_TIME_FORMATS = {msgspec.inspect.DateTimeType: "date-time", msgspec.inspect.DateType: "date"}


def _time_formats(components: dict[str, Any], structs: list[type[msgspec.Struct]]) -> None:
    """msgspec's schema leaves dates and times as bare strings: they get their ``format``."""
    for struct in structs:
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        schema = components.get(struct.__name__)
        if schema is None:
            continue
        for field in info.fields:
            kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) \
                else (field.type,)
            formats = [_TIME_FORMATS[type(k)] for k in kinds if type(k) in _TIME_FORMATS]
            if not formats:
                continue
            prop = schema["properties"][field.encode_name]
            for node in prop.get("anyOf", [prop]):
                if node.get("type") == "string":
                    node["format"] = formats[0]


def _webhooks(document: dict[str, Any]) -> None:
    """OpenAPI 3.1's ``webhooks``: every event type the programme sends, as the POST a receiver
    gets, its body the envelope with ``data`` typed as the event's payload (schemas/outbox.py).
    litestar's ``OpenAPIConfig(webhooks=...)`` wants its own PathItem and Schema objects, built
    by hand; msgspec writes the payloads' JSON Schema (2020-12, as 3.1 uses) from the Structs
    themselves, so the document cannot drift from what is sent."""
    envelopes = {type_: envelope_type(type_) for type_ in EVENT_TYPES}
    (refs, components) = msgspec.json.schema_components(
        list(envelopes.values()), ref_template="#/components/schemas/{name}")
    _time_formats(components, [*envelopes.values(), *EVENT_TYPES.values()])
    schemas = document["components"]["schemas"]
    for name, schema in components.items():
        if name in schemas:
            raise AssertionError(f"an event schema's name {name} is taken by the API's")
        schemas[name] = schema
    document["webhooks"] = {
        type_: {"post": {
            "operationId": "event_" + type_.replace(".", "_"),
            "summary": type_,
            "description": (EVENT_TYPES[type_].__doc__ or "").strip(),
            "tags": ["Webhooks"],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref}}},
            "responses": {"2XX": {"description": "Received; any other answer is retried."}},
        }}
        for (type_, _), ref in zip(envelopes.items(), refs, strict=True)
    }


def _operations(document: dict[str, Any], app: Litestar) -> Iterator[tuple[dict[str, Any], Any,
                                                                         HTTPRoute]]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            for method in handler.http_methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    yield operation, handler, route


def _secure(operation: dict[str, Any], handler: Any) -> None:
    if operation.get("operationId") == "metrics":
        operation["security"] = [{"metrics": []}]
        return
    for guard in handler.resolve_guards():
        if guard is members_only:
            operation["security"] = [{"member": []}]
            return
        if guard is terminals_only:
            operation["security"] = [{"terminal": []}]
            return
        roles = getattr(guard, "roles", None)
        if roles:
            operation["security"] = [{"staff": []}]
            said = operation.get("description", "").rstrip()
            operation["description"] = (said + "\n\n" if said else "") + \
                f"Staff roles: {', '.join(roles)}."
            return
    operation["security"] = []


def _problems(operation: dict[str, Any], handler: Any, route: HTTPRoute) -> None:
    codes: set[int] = set()
    if route.path.startswith("/v1/"):
        codes |= {400, 401, 404, 409, 422, 503}
        if handler.opt.get("rate_limit", True):
            codes.add(429)
    if operation.get("security"):
        codes |= {401, 403}
    if "requestBody" in operation:
        codes |= {400, 413, 415}
    if operation.get("operationId") == "ready":
        codes.add(503)
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        problem: dict[str, Any] = {
            "description": _ERRORS[code],
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if code in (429, 503):
            problem["headers"] = _RETRY_AFTER
        # Litestar's own 400 describes {status_code, detail, extra}, which is never sent.
        responses[str(code)] = problem


def _subclasses(kind: type[S]) -> Iterator[type[S]]:
    for sub in kind.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _input_names() -> set[str]:
    return {sub.__name__ for sub in _subclasses(base.Input)}


def _close_inputs(schemas: dict[str, Any]) -> None:
    """Request bodies refuse unknown fields (``forbid_unknown_fields``): the document says so,
    so a client or a fuzzer does not send what would be refused as if it were allowed."""
    for name in _input_names() & set(schemas):
        schema = schemas[name]
        if schema.get("type") == "object":
            schema["additionalProperties"] = False


def _exactly_one(schemas: dict[str, Any]) -> None:
    """A body that takes exactly one of some fields (``schemas.base.OneOf``) says so: ``oneOf``
    alternatives, each requiring one of them present and not null, so a client sees the rule
    the decoder holds it to. Wrapped in ``allOf``, which means the same: a generator such as
    openapi-python-client reads a bare ``oneOf`` beside ``properties`` as a union of the
    alternatives and drops the model itself."""
    for kind in _subclasses(base.OneOf):
        schema = schemas.get(kind.__name__)
        if schema is None:
            continue
        wire = dict(zip(kind.__struct_fields__, kind.__struct_encode_fields__, strict=True))
        schema["allOf"] = [{"oneOf": [
            {"required": [wire[name]], "properties": {wire[name]: {"not": {"type": "null"}}}}
            for name in kind.one_of]}]


def _numbers_may_be_integers(document: dict[str, Any]) -> None:
    """``int | float`` comes out as ``oneOf [integer, number]``, which no integer satisfies (it
    is both): it is ``anyOf``."""
    for node in objects_in(document):
        choices = node.get("oneOf")
        if isinstance(choices, list):
            kinds = {c.get("type") for c in choices if isinstance(c, dict)}
            if {"integer", "number"} <= kinds:
                node["anyOf"] = node.pop("oneOf")


def objects_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``node``, itself included, outermost first."""
    if isinstance(node, dict):
        yield node
        for value in list(node.values()):
            yield from objects_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from objects_in(value)


def _rename_generics(document: dict[str, Any]) -> None:
    """``Page_schemas.members.Member_`` becomes ``MemberPage``: a name a client generator keeps."""
    schemas = document.get("components", {}).get("schemas", {})
    renames = {}
    for name in list(schemas):
        match = _GENERIC_NAME.match(name)
        if match:
            renames[name] = match.group(2) + match.group(1)
    if not renames:
        return
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    refs = {f"#/components/schemas/{old}": f"#/components/schemas/{new}"
            for old, new in renames.items()}

    for node in objects_in(document):
        if isinstance(node.get("$ref"), str) and node["$ref"] in refs:
            node["$ref"] = refs[node["$ref"]]


# -- serving it ------------------------------------------------------------------------------


class CompleteJson(JsonRenderPlugin):
    """``/schema/openapi.json``: the completed document."""

    def render(self, request: AnyRequest, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, complete(openapi_schema, request.app))


class LocalSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at ``/schema``, its files served by the API itself."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            path=["/", "/swagger"])

    def render(self, request: AnyRequest, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, complete(openapi_schema, request.app))


def _swagger_files() -> Path:
    # Found without importing the package: its __init__ pulls in integrations never used here.
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_assets() -> ControllerRouterHandler:
    """Swagger UI's files, cacheable for a day (they change only with the package)."""
    return create_static_files_router(
        path=ASSETS_PATH, directories=[_swagger_files()], include_in_schema=False,
        cache_control=CacheControlHeader(max_age=86_400, public=True),
        opt={"rate_limit": False, "own_credentials": True}, name="docs_assets")


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(title="Loyalty API", version="1", path=DOCS_PATH,
                         use_handler_docstrings=True,
                         render_plugins=[LocalSwaggerUI(), CompleteJson()])
