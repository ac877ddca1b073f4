"""Slow clients cut off: a request head must arrive within seconds, a body at a minimum rate.

Why: uvicorn bounds only the idle time between kept-alive requests. A client that sends its
request head one byte a second, or a body one byte a second, holds a connection, a socket and
(for a body) an upload spool for as long as it likes; a few hundred such clients exhaust the
server's file descriptors and memory without sending anything that a size limit would see.

- The head (request line and headers) is timed in the protocol, the only layer that sees it
  before it is complete: ``HeadTimeoutProtocol``, uvicorn's httptools protocol with a timer
  armed when a connection opens and when the first byte of a following request arrives, and
  disarmed when the head is complete. At ``HEAD_TIMEOUT_S`` the server answers 408 and closes.
- The body is timed in the ASGI layer (``BodyTimeout``, for every app and server): every
  ``receive`` waits at most ``BODY_IDLE_TIMEOUT_S`` for the next chunk, and after a grace of
  ``BODY_GRACE_S`` the body must keep an average of ``BODY_MIN_BYTES_PER_S``. Past either, the
  app sees a disconnect and the client gets a 408 with ``Connection: close``. Once the body is
  complete, ``receive`` is passed through untimed (a streaming response waits on it for the
  client's disconnect).

The values are module constants until they become settings.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S = 5.0
BODY_IDLE_TIMEOUT_S = 10.0
BODY_GRACE_S = 10.0
BODY_MIN_BYTES_PER_S = 16 * 1024
# A chunk already waiting is taken even when its deadline has just passed: the app, not the
# client, may be what delayed the call to ``receive``.
_MIN_WAIT_S = 0.05


def _timeout_answer(detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is not complete
    within ``head_timeout_s`` (pass it as ``uvicorn.run(..., http=HeadTimeoutProtocol)``)."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = getattr(self, "cycle", None)  # None until the first head is complete
        if cycle is None or cycle.response_complete:
            self._arm()  # bytes between requests: the start of the next head
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            detail = f"request head not complete within {self.head_timeout_s:g} s"
            self.transport.write(_timeout_answer(detail))
            self.transport.close()


class BodyTimeout:
    """ASGI middleware: a request body that stalls or trickles is answered 408 (see module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        idle_s: float = BODY_IDLE_TIMEOUT_S,
        grace_s: float = BODY_GRACE_S,
        min_bytes_per_s: float = BODY_MIN_BYTES_PER_S,
    ) -> None:
        self.app = app
        self.idle_s, self.grace_s, self.min_bytes_per_s = idle_s, grace_s, min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = _BodyClock(self, receive)

        async def guarded_send(message: Message) -> None:
            if clock.timed_out:
                return  # the 408 below answers instead
            clock.response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, clock.receive, guarded_send)
        except Exception:
            if not clock.timed_out:
                raise  # the app's own failure; after a timeout, its reaction to the disconnect
        if clock.timed_out and not clock.response_started:
            detail = (
                f"request body not received in time: no pause over {self.idle_s:g} s, and "
                f"at least {self.min_bytes_per_s:g} bytes/s after the first {self.grace_s:g} s"
            )
            body = json.dumps({"detail": detail}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class _BodyClock:
    """One request's body deadline: the sooner of an idle limit since the last chunk and the
    time the bytes so far would take at the minimum rate, after the grace period."""

    def __init__(self, limits: BodyTimeout, receive: Receive) -> None:
        self.limits, self.inner = limits, receive
        self.loop = asyncio.get_running_loop()
        self.start = self.last = self.loop.time()
        self.received = 0
        self.complete = self.timed_out = self.response_started = False

    async def receive(self) -> Message:
        if self.complete:
            return await self.inner()
        if self.timed_out:
            return {"type": "http.disconnect"}
        limits = self.limits
        deadline = min(
            self.last + limits.idle_s,
            self.start + limits.grace_s + self.received / limits.min_bytes_per_s,
        )
        try:
            message = await asyncio.wait_for(
                self.inner(), max(deadline - self.loop.time(), _MIN_WAIT_S)
            )
        except asyncio.TimeoutError:
            self.timed_out = True
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.last = self.loop.time()
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True  # a disconnect: nothing more to time
        return message
