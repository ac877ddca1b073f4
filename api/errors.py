"""The one place where library errors become HTTP responses (see landscape/errors.py).

The table follows the docstring of ``landscape.errors``; ``status_for`` walks the class's MRO,
so a new subclass inherits its parent's code and ``tests/test_api.py`` checks every class in
the tree has one.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from landscape.errors import (
    CancelledError,
    CheckpointError,
    DatasetNotFoundError,
    LandscapeError,
    SpecError,
    SurfaceFileError,
    UnknownNameError,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[LandscapeError], int] = {
    LandscapeError: 400,
    UnknownNameError: 422,
    SpecError: 422,
    DatasetNotFoundError: 422,
    CheckpointError: 422,
    SurfaceFileError: 409,
    CancelledError: 409,
}


def status_for(exc: LandscapeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    raise AssertionError(f"{type(exc).__name__} is not a LandscapeError")  # pragma: no cover


async def landscape_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LandscapeError)
    status = status_for(exc)
    log.info("%s → %d: %s", type(exc).__name__, status, exc)
    return JSONResponse(status_code=status, content={"detail": str(exc)})
