"""The OpenAPI document says what the error bodies really are.

FastAPI documents 422 as `{"detail": [ValidationError]}`, but our handler answers `{"detail": "<summary>",
"errors": [...]}` (no echoed input), and every ApiError (401/403/404/409/413) answers `{"detail": "..."}`
without being documented at all. Clients and schemathesis validate against this document, so it must match.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, in words"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "type": {"type": "string"}, "loc": {"type": "array", "items": {}}, "msg": {"type": "string"}}}},
    },
    "required": ["detail"],
}


def install_error_schemas(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorBody"] = ERROR_BODY
        schemas["HTTPValidationError"] = {**ERROR_BODY, "title": "HTTPValidationError"}
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("default", {
                    "description": "Error (4xx): the body says what is wrong",
                    "content": {"application/json": {"schema": ERROR_REF}},
                })
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
