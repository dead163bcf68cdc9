"""The OpenAPI document: what litestar generates, plus what it cannot know about this API."""

from __future__ import annotations

from typing import Any

from litestar._openapi.schema_generation import SchemaCreator
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from schemas.base import EDGE_TYPES, BirthDate, Day, Instant

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
