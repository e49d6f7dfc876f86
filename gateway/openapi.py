"""The OpenAPI 3.1 document of the gateway, generated from the Structs it validates with.

Request schemas come from ``footfall.reports.Visit``/``Activity`` and response schemas
from the Structs the handlers encode (:class:`Accepted`, :class:`ErrorBody`), all through
``msgspec.json.schema_components``, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from footfall.reports import Activity, Visit
from gateway.errors import FieldError

__all__ = ["API_ROUTES", "Accepted", "ErrorBody", "build_openapi"]

#: (report type, path) of every ingestion route; each also answers with a trailing slash.
API_ROUTES: Final = (("visit", "/api/visit/v1"), ("activity", "/api/activity/v1"))


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """200: every report of the request was acknowledged by Kafka (acks=all)."""

    accepted: int
    """Number of reports accepted."""


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Any non-2xx answer: what was wrong and what to do."""

    error: str
    """Machine-readable kind: bad_request, unauthorized, payload_too_large, unsupported_media_type,
    invalid_reports, unavailable, saturated, broker_unreachable, produce_failed, produce_timeout, not_found, ..."""
    message: str
    """Human-readable explanation."""
    request_id: str | None = None
    errors: list[FieldError] | None = None
    """422 only: the first invalid reports, as {index, field, message}."""


def _ci(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


#: Content-Encoding values the gateway accepts (gateway.body.parse_content_encoding), as a JSON Schema regex.
_CODING_PATTERN: Final = (
    "^[ \\t]*(" + "|".join(["", *map(_ci, ("gzip", "x-gzip", "deflate", "identity"))]) + ")[ \\t]*$"
)

_ERRORS: Final = {
    "400": "Malformed JSON (NaN/Infinity included) or a corrupt/truncated gzip or deflate stream.",
    "401": "API keys are configured and the request has none or a wrong one (Authorization: Bearer or X-API-Key).",
    "413": "Body too large: compressed (Content-Length) or decompressed, or it expands too much.",
    "415": "Content-Type is not application/json, or Content-Encoding is not gzip, deflate or identity.",
    "422": "Well-formed JSON that breaks the report schema (or an empty array); lists {index, field, message}.",
    "503": "Kafka unreachable, the produce timed out, or the in-flight cap is reached: retry after Retry-After.",
}


def build_openapi(*, api_keys: bool) -> dict[str, Any]:
    """The OpenAPI document (``/openapi.json``)."""
    array_types = (list[Visit], list[Activity], Accepted, ErrorBody)
    (visits, activities, accepted, error), components = msgspec.json.schema_components(
        array_types, ref_template="#/components/schemas/{name}"
    )
    for schema in (visits, activities):
        schema["minItems"] = 1
    error_response = {"$ref": "#/components/responses/Error"}
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}] if api_keys else []

    def operation(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
        op: dict[str, Any] = {
            "operationId": f"post_{kind}",
            "summary": f"Ingest {kind} reports",
            "description": (
                f"A JSON array of {kind} reports, gzip'd (Content-Encoding: gzip), deflated or plain. "
                "Answered 200 only after Kafka acknowledged every report (acks=all); the request is "
                "accepted or rejected as a unit."
            ),
            "parameters": [
                {
                    "name": "Content-Encoding",
                    "in": "header",
                    "required": False,
                    "description": "gzip, x-gzip, deflate (zlib or raw) or identity; case-insensitive; "
                    "absent or empty = identity",
                    "schema": {"type": "string", "pattern": _CODING_PATTERN},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {
                    "description": "Every report acknowledged by Kafka.",
                    "content": {"application/json": {"schema": accepted}},
                },
                **{code: {**error_response} for code in _ERRORS if code != "503"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
        if api_keys:
            op["security"] = security
        return op

    responses: dict[str, Any] = {
        "Error": {
            "description": " | ".join(f"{code}: {text}" for code, text in _ERRORS.items() if code != "503"),
            "content": {"application/json": {"schema": error}},
        },
        "Unavailable": {
            "description": _ERRORS["503"],
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
            "content": {"application/json": {"schema": error}},
        },
    }
    paths: dict[str, Any] = {}
    for (kind, path), schema in zip(API_ROUTES, (visits, activities), strict=True):
        paths[path] = {"post": operation(kind, schema)}
    plain = {"description": "JSON status", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Alive", "responses": {"200": plain}}}
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "summary": "Ready: broker reachable and not saturated",
            "responses": {"200": plain, "503": plain},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics, aggregated over worker processes",
            "responses": {
                "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Footfall gateway",
            "version": "1",
            "description": "Visit and activity reports in, Kafka out. 2xx only after Kafka acknowledged them.",
        },
        "paths": paths,
        "components": {"schemas": components, "responses": responses},
    }
    if api_keys:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return doc
