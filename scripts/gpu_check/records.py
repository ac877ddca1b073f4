"""What the check writes as it goes: the versions record first, then one JSON line per finished
step (so a run cut short by a time limit keeps every step it finished), each with the warnings
the step raised."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.gpu_check.common import Context, driver_version, version_of

MAX_WARNINGS = 50  # distinct warnings kept per step; repeats are counted, not stored again


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class Journal:
    """``gpu-check.jsonl`` in the output folder, emptied at the start of a run: each record is
    appended, flushed to disk and printed as soon as it exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=jsonable)
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write(line + "\n")
            sink.flush()
            os.fsync(sink.fileno())
        print(line, flush=True)


class _Collector(logging.Handler):
    def __init__(self, into: list[dict[str, Any]]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(
            {
                "source": "logging",
                "category": record.levelname,
                "logger": record.name,
                "message": record.getMessage()[:500],
                "where": f"{record.pathname}:{record.lineno}",
            }
        )


@contextlib.contextmanager
def step_warnings() -> Iterator[list[dict[str, Any]]]:
    """Every warning raised and every WARNING-or-worse log record while the block runs, in this
    process (engine worker processes keep their own), as dicts in the yielded list once the
    block ends, identical ones counted once."""
    found: list[dict[str, Any]] = []
    handler = _Collector(found)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield found
            finally:
                found[:0] = [
                    {
                        "source": "warnings",
                        "category": w.category.__name__,
                        "message": str(w.message)[:500],
                        "where": f"{w.filename}:{w.lineno}",
                    }
                    for w in caught
                ]
                found[:] = _counted(found)
    finally:
        root.removeHandler(handler)


def _counted(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    distinct: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in found:
        key = (item["source"], item["category"], item["message"], item["where"])
        if key in distinct:
            distinct[key]["count"] += 1
        elif len(distinct) < MAX_WARNINGS:
            distinct[key] = {**item, "count": 1}
    return list(distinct.values())


# -- the versions record ---------------------------------------------------------------------
def versions_record(ctx: Context) -> dict[str, Any]:
    """What the run depends on, cheap enough to come before any step: a field that cannot be
    read is ``None`` (and never stops the run)."""
    import torch

    record: dict[str, Any] = {
        "record": "versions",
        "time": now(),
        "argv": sys.argv[1:],
        "device": str(ctx.device),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built for
        "triton": version_of("triton") if _importable("triton") else "not installed",
    }
    fields = {
        "cudnn": _cudnn,
        "cuda_available": torch.cuda.is_available,
        "cuda_runtime": cuda_runtime_version,
        "cuda_driver_api": cuda_driver_api_version,
        "driver": lambda: driver_version(ctx.device.index or 0) if ctx.cuda else None,
        "gpu": lambda: torch.cuda.get_device_name(ctx.device) if ctx.cuda else None,
        "gpu_memory_bytes": lambda: _total_memory(ctx),
    }
    for name, read in fields.items():
        try:
            record[name] = read()
        except Exception as exc:
            record[name] = None
            record.setdefault("unreadable", {})[name] = f"{type(exc).__name__}: {exc}"[:200]
    return record


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cudnn() -> int | None:
    import torch

    return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None


def _total_memory(ctx: Context) -> int | None:
    if not ctx.cuda:
        return None
    import torch

    return int(torch.cuda.get_device_properties(ctx.device).total_memory)


def _loaded(library: str) -> str | None:
    """The path of a shared library this process has loaded (``/proc/self/maps``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            found = re.search(rf"(/\S*/{library}(?:-[0-9a-f]+)?\.so[\d.]*)$", line)
            if found:
                return found.group(1)
    return None


def _version_call(library: str, function: str) -> str | None:
    """``major.minor`` from a CUDA ``cu…GetVersion``-style call in a loaded (or loadable)
    library."""
    import ctypes

    path = _loaded(library) or (f"{library}.so.1" if library == "libcuda" else None)
    if path is None:
        return None
    value = ctypes.c_int()
    try:
        status = getattr(ctypes.CDLL(path), function)(ctypes.byref(value))
    except OSError:  # not installed (a machine without the NVIDIA driver)
        return None
    if status != 0:
        return None
    return f"{value.value // 1000}.{value.value % 1000 // 10}"


def cuda_runtime_version() -> str | None:
    """The CUDA runtime torch loaded (``cudaRuntimeGetVersion``): after CUDA is initialized;
    ``None`` on a CPU-only run."""
    return _version_call("libcudart", "cudaRuntimeGetVersion")


def cuda_driver_api_version() -> str | None:
    """The CUDA version the installed driver supports (``cuDriverGetVersion``)."""
    return _version_call("libcuda", "cuDriverGetVersion")
