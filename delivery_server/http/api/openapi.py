"""The OpenAPI 3.1 document of ``/api/v1``, built from the endpoint table and the
pydantic models (so that it cannot drift from what the routes do)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from delivery_server import __version__
from delivery_server.http.api.auth import SESSION_COOKIE
from delivery_server.http.api.endpoints import JSON, Endpoint
from delivery_server.http.api.models import ErrorAnswer

REF = "#/components/schemas/{model}"
_REASONS = {
    400: "Bad request",
    401: "No token, or an invalid or revoked one",
    403: "The token's scope does not allow this",
    404: "No such job (or template)",
    409: "The job's state does not allow this now",
    413: "The body or upload is too large",
    415: "Wrong content type",
    422: "Invalid request",
    429: "Too many failed authentications from this address",
    503: "The database is unavailable",
}


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The whole document, ``openapi.json`` itself included among the paths."""
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorAnswer, "serialization")]
    for endpoint in endpoints:
        for model, mode in _models(endpoint):
            if (model, mode) not in keyed:
                keyed.append((model, mode))
    refs, definitions = models_json_schema(keyed, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = _operation(endpoint, refs)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "delivery-server operator API",
            "version": __version__,
            "description": "Jobs, their emails, actions, templates, suppressions and the "
            "audit trail. Every route needs Authorization: Bearer <token> "
            "(delivery-server tokens create), or the operator console's session cookie; "
            "a POST with the cookie also sends the session's CSRF token in X-CSRF-Token "
            '(the console pages carry it in <meta name="csrf-token">).',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
    }


def _models(endpoint: Endpoint) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for model in (endpoint.body, endpoint.form, endpoint.query):
        if model is not None:
            found.append((model, "validation"))
    if endpoint.answer is not None:
        found.append((endpoint.answer, "serialization"))
    return found


Refs = dict[tuple[Any, Literal["validation", "serialization"]], Any]


def _operation(endpoint: Endpoint, refs: Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": _operation_id(endpoint),
        "tags": [endpoint.path.split("/")[3]],
        "parameters": _parameters(endpoint),
        "responses": _responses(endpoint, refs),
    }
    if endpoint.scope == "operate":
        operation["description"] = "Needs a token of scope operate; audited."
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {JSON: {"schema": refs[(endpoint.body, "validation")]}},
        }
    if endpoint.form is not None:
        form = dict(refs[(endpoint.form, "validation")])
        schema = {
            "allOf": [
                form,
                {
                    "type": "object",
                    "required": ["recipients"],
                    "properties": {
                        "recipients": {"type": "string", "contentMediaType": "text/csv"}
                    },
                },
            ]
        }
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    return operation


def _operation_id(endpoint: Endpoint) -> str:
    words = [w for w in endpoint.path.removeprefix("/api/v1/").split("/") if w]
    cleaned = [w.strip("{}").replace("-", "_").replace(".", "_") for w in words]
    return "_".join([endpoint.method.lower(), *cleaned])


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    if endpoint.has_job_id:
        parameters.append(
            {
                "name": "job_id",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            }
        )
    if endpoint.query is not None:
        schema = endpoint.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", ()))
        for name, field_schema in schema["properties"].items():
            parameter = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": field_schema,
            }
            parameters.append(parameter)
    return parameters


def _responses(endpoint: Endpoint, refs: Refs) -> dict[str, Any]:
    if endpoint.answer is not None:
        content = {JSON: {"schema": refs[(endpoint.answer, "serialization")]}}
    else:
        content = {endpoint.media: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {
        str(endpoint.status): {"description": "OK", "content": content},
    }
    error = {JSON: {"schema": refs[(ErrorAnswer, "serialization")]}}
    statuses = {401, 429, *endpoint.errors}
    if endpoint.scope == "operate":
        statuses.add(403)
    if endpoint.body is not None:
        statuses |= {413, 415}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _REASONS[status], "content": error}
    return responses
