"""The request guard: a pure ASGI middleware that decides before the body is read.

Everything a client can make the server spend disk, memory or queue slots on is checked here,
in order, before a route (or a multipart parser spooling to a temp file) sees a byte of it:

1. a write (POST/PUT/PATCH/DELETE) without one of the server's bearer tokens, when it has
   any, is answered 401 at once;
2. a declared ``Content-Length`` over the route's limit is answered 413 at once, and a body
   sent without one (chunked) is counted as it streams and cut off at the limit (413);
3. a request with more than one ``Content-Type`` header is answered 400: this guard and the
   route would each read another one (the route the first, a scan the last), so a JSON body
   could pass as text here and be parsed as JSON there;
4. a JSON body (bounded by 2.) holding ``NaN``, ``Infinity`` or a number beyond float range is
   answered 422: non-finite numbers have one meaning here, invalid (the request schemas refuse
   them too);
5. a job submission (surface, making one exact, Hessian, gradient flow, sharpness, report)
   from a client (its token, else its address: ``api/quota.py``) with too many queued or
   running jobs, or while the whole queue is full, is answered 429; else its route runs with
   the client in ``api.jobs.submitted_by``, so the job it queues records it, and the check
   and the submission run under one lock.

It also completes ``Allow`` on 405 answers from every route matching the path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.jobs import JobQueue, submitted_by
from api.quota import (
    RETRY_AFTER,
    Client,
    Quota,
    address_client,
    client_address,
    parse_networks,
    token_client,
)
from api.settings import ApiToken, Settings

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
UPLOAD_PATH = "/api/checkpoints"
MULTIPART_SLACK = 64 * 1024  # form field names, boundaries and headers around the file
SUBMISSION = re.compile(
    r"^/api/(?:surfaces(?:/[^/]+/(?:hessian|gradient-flow|sharpness|exact))?|reports)/?$"
)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (an ``HTTPException``, so
    FastAPI's body parsing lets it through as the 413 it is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than this server's limit of {limit} bytes")


class _NonFinite:
    """Marks where a non-finite number sat in a parsed JSON body."""


_NON_FINITE = _NonFinite()


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NON_FINITE


def _parse_int(text: str) -> int | _NonFinite:
    value = int(text)
    return value if abs(value) <= 1.7976931348623157e308 else _NON_FINITE


def find_non_finite(body: bytes) -> list[str | int] | None:
    """The location of the first non-finite number in a JSON body, or None (also when the body
    is not JSON at all: the route answers that itself)."""
    try:
        value = json.loads(
            body,
            parse_constant=lambda _name: _NON_FINITE,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except (ValueError, RecursionError):  # not JSON, or nested too deep: the route says so
        return None
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, where = stack.pop()
        if node is _NON_FINITE:
            return where
        if isinstance(node, dict):
            stack.extend((v, [*where, str(k)[:100]]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, [*where, i]) for i, v in enumerate(node))
    return None


def _json_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> Message:
    return {"status": status, "detail": detail, "headers": headers or {}}


class RequestGuard:
    """See the module docstring; ``routes`` gives the app's routes (for ``Allow``)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        queue: JobQueue,
        routes: Callable[[], Sequence[BaseRoute]],
    ) -> None:
        self.app = app
        self.settings = settings
        self.queue = queue
        self.routes = routes
        self.trusted = parse_networks(settings.trusted_proxies)
        self._submitting = anyio.Lock()

    def body_limit(self, method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") == UPLOAD_PATH:
            return self.settings.max_upload_bytes + MULTIPART_SLACK
        return self.settings.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(pairs)
        content_types = sum(name == "content-type" for name, _ in pairs)
        token = self._token(headers)
        refusal = self._refuse_early(method, path, headers, content_types, token)
        if refusal is not None:
            await _send_json(send, refusal)
            return
        receive = _counting(receive, self.body_limit(method, path))
        submission = method == "POST" and bool(SUBMISSION.match(path))
        is_json = _is_json(headers.get("content-type"))
        if method in WRITE_METHODS and (is_json or submission):
            try:
                body = await _read_all(receive)
            except BodyTooLarge as exc:
                await _send_json(send, _json_response(413, exc.detail))
                return
            where = find_non_finite(body) if is_json else None
            if where is not None:
                detail = [
                    {
                        "type": "finite_number",
                        "loc": ["body", *where],
                        "msg": "NaN, Infinity and numbers beyond float range are not accepted",
                    }
                ]
                await _send_json(send, _json_response(422, detail))
                return
            receive = _replay(body, receive)
        if not submission:
            await self._call_app(scope, receive, send)
            return
        client = self._client(scope, pairs, token)
        # Check and submit as one step (the body is already here, so this is quick), or
        # concurrent submissions would all pass the check.
        async with self._submitting:
            quota = Quota(self.queue, self.settings, client)
            no_room = await anyio.to_thread.run_sync(quota.refusal)
            if no_room is not None:
                await _send_json(send, _json_response(429, no_room, RETRY_AFTER))
                return
            marker = submitted_by.set(client.key)
            try:
                await self._call_app(scope, receive, send)
            finally:
                submitted_by.reset(marker)

    def _token(self, headers: dict[str, str]) -> ApiToken | None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.settings.token_for(given.strip())

    def _client(self, scope: Scope, pairs: list[tuple[str, str]], token: ApiToken | None) -> Client:
        """Who a submission counts against: its token, else its address."""
        if token is not None:
            return token_client(token, self.settings)
        peer = scope.get("client")
        forwarded = [value for name, value in pairs if name == "x-forwarded-for"]
        address = client_address(str(peer[0]) if peer else "unknown", forwarded, self.trusted)
        return address_client(address, self.settings)

    def _refuse_early(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content_types: int,
        token: ApiToken | None,
    ) -> Message | None:
        if method in WRITE_METHODS and self.settings.tokens and token is None:
            return _json_response(
                401,
                "this server needs 'Authorization: Bearer <token>' with one of its tokens "
                "(LANDSCAPE_API_TOKEN, LANDSCAPE_API_TOKENS)",
                {"WWW-Authenticate": "Bearer"},
            )
        if content_types > 1:
            return _json_response(400, "more than one Content-Type header")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return _json_response(400, "Content-Length is not a number")
            limit = self.body_limit(method, path)
            if int(declared) > limit:
                return _json_response(
                    413, f"request body larger than this server's limit of {limit} bytes"
                )
        return None

    async def _call_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 405:
                    message = self._with_allow(message, scope)
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_json(send, _json_response(413, exc.detail))

    def _with_allow(self, message: Message, scope: Scope) -> Message:
        allowed: set[str] = set()
        for route in self.routes():
            if isinstance(route, Mount):  # static files: reads only
                if route.matches(scope)[0] != Match.NONE:
                    allowed |= {"GET", "HEAD"}
                continue
            for method in PROBED_METHODS:
                if route.matches({**scope, "method": method})[0] == Match.FULL:
                    allowed.add(method)
        if not allowed:
            return message
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
        headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
        return {**message, "headers": headers}


def _is_json(content_type: str | None) -> bool:
    """FastAPI parses a body as JSON when it says so or says nothing."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_json(send: Send, refusal: Message) -> None:
    body = json.dumps({"detail": refusal["detail"]}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in refusal["headers"].items()),
    ]
    await send({"type": "http.response.start", "status": refusal["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})
