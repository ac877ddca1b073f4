"""Request dependencies as named ``Annotated`` aliases (the full-stack-fastapi-template way).

Everything comes from ``request.app.state`` (set by ``create_app``), never from module globals,
so each test app has its own settings, database and queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.jobs import JobQueue
from api.schemas.common import ErrorMessage
from api.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(
    auto_error=False,
    description="Needed on POST/DELETE when the server sets LANDSCAPE_API_TOKEN "
    "(and on GET too with LANDSCAPE_PROTECT_READS=true).",
)
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(
    settings: Settings, credentials: HTTPAuthorizationCredentials | None, fallback: str = ""
) -> None:
    if not settings.tokens:
        return
    given = credentials.credentials if credentials is not None else fallback
    if settings.token_for(given) is None:
        raise HTTPException(
            status_code=401,
            detail="this server needs 'Authorization: Bearer <token>' with one of its tokens "
            "(LANDSCAPE_API_TOKEN, LANDSCAPE_API_TOKENS)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_token(settings: SettingsDep, credentials: CredentialsDep) -> None:
    """Mutating endpoints: the bearer token, when the server has one."""
    _check(settings, credentials)


def require_read(
    settings: SettingsDep,
    credentials: CredentialsDep,
    access_token: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> None:
    """Read endpoints: open unless the server protects reads too. ``?access_token=`` is
    accepted as well, because the browser's EventSource cannot send headers."""
    if settings.protect_reads:
        _check(settings, credentials, access_token or "")


WriteAccess = Depends(require_token)
ReadAccess = Depends(require_read)

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or wrong bearer token",
    404: "No such id",
    409: "Conflicts with the current state",
    410: "The stored file is unreadable (post the request again to recompute it)",
    413: "Upload too large",
    422: "Invalid request (message in detail)",
    429: "Too many active jobs (in total or from this client); retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route may answer with ({"detail": ...})."""
    return {code: {"model": ErrorMessage, "description": _DESCRIPTIONS[code]} for code in codes}
