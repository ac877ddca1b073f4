"""The OpenAPI schema as this server enforces it (built once per app, from its settings).

Routes declare their own models; what depends on the deployment is added here: GETs need the
token only when reads are protected, every body-taking operation may answer 400 (unparsable
body or Content-Length) and 413 (over its limit), job submissions may answer 429 (queue full).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.guard import MULTIPART_SLACK, SUBMISSION, UPLOAD_PATH, WRITE_METHODS
from api.settings import Settings

_ERROR = {"$ref": "#/components/schemas/ErrorMessage"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def honest_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _adjust(path, method.upper(), operation, settings)
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "ErrorMessage",
        {
            "title": "ErrorMessage",
            "type": "object",
            "properties": {"detail": {"title": "Detail", "type": "string"}},
            "required": ["detail"],
        },
    )
    app.openapi_schema = schema
    return schema


def _adjust(path: str, method: str, operation: dict[str, Any], settings: Settings) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if method not in WRITE_METHODS:
        if not settings.protect_reads:
            operation.pop("security", None)
            responses.pop("401", None)
        return
    responses.setdefault("401", _error("Missing or wrong bearer token (before the body is read)"))
    if "requestBody" in operation:
        upload = path.rstrip("/") == UPLOAD_PATH
        limit = settings.max_upload_bytes + MULTIPART_SLACK if upload else settings.max_json_bytes
        responses.setdefault("400", _error("Unparsable body or Content-Length"))
        responses["413"] = _error(f"Body over this server's limit ({limit} bytes)")
        note = f"Body limit: {limit} bytes (413 beyond, checked before it is read)."
        if not upload:
            note += " `NaN`, `Infinity` and numbers beyond float range are refused (422)."
        operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
    if method == "POST" and SUBMISSION.match(path):
        responses["429"] = _error(
            f"Queue full: {settings.max_active_jobs} queued or running jobs in all, or "
            f"{settings.max_active_jobs_per_client} from this client"
        )
