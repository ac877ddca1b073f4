"""Low-level HDF5 access shared by the surface file's readers and writers.

Files are opened per operation inside ``with`` so a reader (the API) and the writer (a worker)
in different processes take turns; lock contention is retried briefly. Every change to an
existing file goes through ``atomic_update``: a copy is edited and swapped in with
``os.replace``, so ``kill -9`` at any instant leaves the old file or the new one. Per-chunk
results do not take that path (see ``journal.py``): only rare, whole-file events do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import LandscapeError, SurfaceFileError
from landscape.specs import SurfaceSpec, from_dict
from landscape.storage.keys import FORMAT, FORMAT_NAME

LOCK_RETRY_S = 10.0  # how long to wait for another process's HDF5 lock before giving up
READABLE_VERSIONS = (1, 2, 3)


def _is_lock_error(exc: OSError) -> bool:
    text = str(exc).lower()
    return "unable to lock" in text or "temporarily unavailable" in text


def name(path: Path) -> str:
    """How errors name a file: its name only, never the folder it lives in on the server."""
    return repr(path.name)


@contextlib.contextmanager
def open_file(path: Path, mode: str) -> Iterator[h5py.File]:
    """``h5py.File`` with brief retries while another process holds the lock."""
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            handle = h5py.File(path, mode)
            break
        except FileNotFoundError as exc:
            raise SurfaceFileError(f"no surface file {name(path)}") from exc
        except OSError as exc:
            if _is_lock_error(exc) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if mode == "r" and not path.exists():
                raise SurfaceFileError(f"no surface file {name(path)}") from exc
            raise SurfaceFileError(f"cannot open {name(path)} as HDF5: {exc}") from exc
    with handle:
        yield handle


def atomic_update(path: Path, edit: Callable[[h5py.File], None]) -> None:
    """Apply ``edit`` to a copy of ``path`` and swap it in, so a kill never corrupts ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(path, tmp)
    except FileNotFoundError as exc:
        raise SurfaceFileError(f"no surface file {name(path)}") from exc
    try:
        with open_file(tmp, "r+") as handle:
            edit(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_array(handle: h5py.File, key: str, path: Path) -> np.ndarray:
    """One dataset as an array; any failure names the file and the HDF5 key."""
    try:
        array: np.ndarray = np.asarray(handle[key][()])
        return array
    except (KeyError, OSError, ValueError, TypeError, RuntimeError) as exc:
        raise SurfaceFileError(f"{name(path)}: cannot read {key!r}: {exc}") from exc


def attr_to_python(value: Any) -> Any:
    """HDF5 attr → plain Python; JSON text objects/arrays are decoded (see docs/format.md)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in ("{", "["):
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def python_to_attr(value: Any) -> Any:
    """Scalars as themselves, containers as JSON text; ``None`` is not storable (skipped)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def format_version(handle: h5py.File, path: Path) -> int:
    """The file's major format version; a clear error for foreign or too-new files."""
    fmt = handle.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_NAME + "/"):
        raise SurfaceFileError(
            f"{name(path)} is not a landscape surface file (format attribute {fmt!r}; "
            f"expected {FORMAT!r})"
        )
    version = fmt.rsplit("/", 1)[1]
    if not version.isdigit() or int(version) not in READABLE_VERSIONS:
        raise SurfaceFileError(
            f"{name(path)} has format {fmt!r}, which this landscape cannot read "
            f"(it reads {FORMAT!r} and older); upgrade landscape or recompute the surface"
        )
    return int(version)


def read_spec(handle: h5py.File, path: Path) -> SurfaceSpec:
    try:
        return from_dict(SurfaceSpec, json.loads(handle.attrs["spec"]))
    except (KeyError, TypeError, ValueError, OSError, LandscapeError) as exc:
        raise SurfaceFileError(f"{name(path)}: cannot read attribute 'spec': {exc}") from exc
