"""The one place where errors become HTTP responses (see landscape/errors.py).

The table follows the docstring of ``landscape.errors``; ``status_for`` walks the class's MRO,
so a new subclass inherits its parent's code and ``tests/api/test_api.py`` checks every class in
the tree has one. Every message leaving here is redacted (no server path) and bounded; a 422
names what is wrong and where, but never echoes the input back (it may be megabytes, or hold
numbers JSON cannot carry).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.redact import one_line, redact_paths, truncate_value
from landscape.errors import (
    CancelledError,
    CheckpointError,
    DatasetNotFoundError,
    DivergedError,
    LandscapeError,
    SpecError,
    SurfaceFileError,
    UnknownNameError,
)
from landscape.sources.safe_load import CheckpointTooLargeError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[LandscapeError], int] = {
    LandscapeError: 400,
    UnknownNameError: 422,
    SpecError: 422,
    DatasetNotFoundError: 422,
    CheckpointError: 422,
    DivergedError: 422,
    CheckpointTooLargeError: 413,
    SurfaceFileError: 409,
    CancelledError: 409,
}
MAX_DETAIL_CHARS = 1000
MAX_VALIDATION_ERRORS = 20


def _finite_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: a non-finite float becomes null instead of a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:
            return json.dumps(
                _finite_only(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")


def status_for(exc: LandscapeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    raise AssertionError(f"{type(exc).__name__} is not a LandscapeError")  # pragma: no cover


def public_detail(text: str) -> str:
    """An error message fit for a client: no server path, at most ``MAX_DETAIL_CHARS``."""
    return one_line(text, MAX_DETAIL_CHARS)


async def landscape_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LandscapeError)
    status = status_for(exc)
    log.info("%s → %d: %s", type(exc).__name__, status, exc)
    return SafeJSONResponse(status_code=status, content={"detail": public_detail(str(exc))})


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """422 with type, location and message of the first errors; no ``input`` echo."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [
        {
            "type": str(error.get("type", "invalid"))[:100],
            "loc": truncate_value(list(error.get("loc", ())), max_chars=100, depth=1),
            "msg": public_detail(str(error.get("msg", "invalid value"))),
        }
        for error in errors[:MAX_VALIDATION_ERRORS]
    ]
    if len(errors) > MAX_VALIDATION_ERRORS:
        detail.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_VALIDATION_ERRORS} more errors not shown",
            }
        )
    return SafeJSONResponse(status_code=422, content={"detail": detail})


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette/FastAPI ``HTTPException``s, with string details redacted like the rest."""
    assert isinstance(exc, HTTPException)
    detail: Any = exc.detail
    detail = redact_paths(detail)[:MAX_DETAIL_CHARS] if isinstance(detail, str) else detail
    return SafeJSONResponse(
        status_code=exc.status_code, content={"detail": detail}, headers=exc.headers
    )
