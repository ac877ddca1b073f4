"""What an error may say to a client: one line, no traceback, no server path.

Full details (traceback, paths) go to the server log under an error id; the client sees the
message and that id, which an operator can search the log for.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from landscape.errors import LandscapeError

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300
# An absolute path of two or more parts (``/srv/data/x.pt``), outside our own URL space; it is
# shortened to its last part, which names the file without saying where it lives.
_PATH = re.compile(r"(?<![\w.:/])/(?!api/|static/|docs\b|healthz\b)(?:[\w.~+-]+/)+([\w.~+-]*)")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\\\s'\"]+\\)+([^\\\s'\"]*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute file-system path cut to its last component."""
    text = _PATH.sub(lambda m: m.group(1) or "…", text)
    return _WINDOWS_PATH.sub(lambda m: m.group(1) or "…", text)


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The last meaningful line of ``text`` (a traceback's is the exception), redacted and cut
    to ``limit`` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else " ".join(lines)
    line = redact_paths(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def new_error_id() -> str:
    return uuid.uuid4().hex[:12]


def public_error(exc: BaseException) -> tuple[str, str]:
    """``(message, error_id)`` for a failed job: a library error keeps its own message (it
    names the user's mistake); anything else is an internal error, told only by its type. The
    traceback is logged here with the id."""
    error_id = new_error_id()
    log.error("error %s: %s", error_id, exc, exc_info=(type(exc), exc, exc.__traceback__))
    if isinstance(exc, LandscapeError):
        message = one_line(str(exc)) or type(exc).__name__
    else:
        message = f"internal error ({type(exc).__name__})"
    return f"{message} (error id {error_id})", error_id


def public_stored_error(error: str | None) -> str | None:
    """A job error as stored by any version of the worker, made fit to show (older rows may
    hold a traceback or paths)."""
    if error is None:
        return None
    return one_line(error) or "failed"


def truncate_value(value: Any, *, max_chars: int = 200, max_items: int = 20, depth: int = 3) -> Any:
    """A JSON value cut down to a small size: strings to ``max_chars``, containers to
    ``max_items`` entries and ``depth`` levels, non-finite floats to None."""
    if isinstance(value, str):
        return redact_paths(value if len(value) <= max_chars else value[: max_chars - 1] + "…")
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if depth <= 0:
        return None
    if isinstance(value, dict):
        items = list(value.items())[:max_items]
        return {
            str(k)[:max_chars]: truncate_value(
                v, max_chars=max_chars, max_items=max_items, depth=depth - 1
            )
            for k, v in items
        }
    if isinstance(value, list | tuple):
        return [
            truncate_value(v, max_chars=max_chars, max_items=max_items, depth=depth - 1)
            for v in list(value)[:max_items]
        ]
    return truncate_value(str(value), max_chars=max_chars)
