"""Changing a surface file after creation: chunks through the journal, the rest atomically.

``SurfaceWriter`` is held by the one run computing a file. Each chunk costs an append of
that chunk (``journal.py``); ``close`` folds the journal into the file with one atomic copy.
Before each append the writer checks that the file it started on is still there, unchanged:
a file deleted, truncated or replaced under a running job fails the job with a clear error
instead of appending points nobody will ever read.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import SurfaceFileError
from landscape.storage import hdf5
from landscape.storage.hdf5 import atomic_update, name, python_to_attr
from landscape.storage.journal import JournalWriter, journal_path, read_journal
from landscape.storage.keys import FORMAT
from landscape.storage.surface_file import COMPUTED, CORE_ENTRIES, ENCODING_VERSION, Group

log = logging.getLogger(__name__)


def set_aside(path: str | Path) -> Path:
    """Move a damaged surface file (and its journal) out of the way of its recomputation,
    keeping it for inspection as ``<name>.unreadable-<unix time>``."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    path.replace(aside)
    journal_path(path).unlink(missing_ok=True)
    log.warning("surface file %s is unreadable; moved to %s", path.name, aside.name)
    return aside


class SurfaceWriter:
    """Append finished chunks to one surface file; ``close()`` folds them in."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _upgrade_v1(self.path)
        with hdf5.open_file(self.path, "r") as f:
            self.generation = str(hdf5.attr_to_python(f.attrs["generation"]))
            self.metric_names = hdf5.read_spec(f, self.path).metric_names
        self.journal = JournalWriter(self.path, self.generation)
        self._file_stat = _identity(self.path)

    def append(self, flat_indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Record one finished chunk (every metric of the file for each of its points)."""
        missing = set(self.metric_names) - set(values)
        if missing:
            raise SurfaceFileError(f"{name(self.path)}: chunk lacks {', '.join(sorted(missing))}")
        self._check_intact()
        stacked = np.stack([np.asarray(values[m], dtype=np.float64) for m in self.metric_names])
        self.journal.append(np.asarray(flat_indices, dtype=np.int64), stacked)

    def _check_intact(self) -> None:
        now: tuple[int, int, int] | None
        journal_now: os.stat_result | None
        try:
            now = _identity(self.path)
            journal_now = os.stat(journal_path(self.path))
        except FileNotFoundError:
            now = journal_now = None
        if now != self._file_stat or journal_now is None or not _same(journal_now, self.journal):
            raise SurfaceFileError(
                f"surface file {name(self.path)} was deleted, truncated or replaced while it "
                "was being computed; its finished points went with it. Request the surface "
                "again to recompute it"
            )

    def close(self, attrs: Mapping[str, Any] | None = None) -> None:
        """Fold the journal into the file (one atomic swap) and set ``attrs``."""
        self.journal.close()
        fold_journal(self.path, attrs)


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _same(st: os.stat_result, journal: JournalWriter) -> bool:
    own = journal.stat()
    return (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev)


def _upgrade_v1(path: Path) -> None:
    """Give a version 1 file the version 2 entries (its mask from its NaNs), atomically."""
    with hdf5.open_file(path, "r") as f:
        if hdf5.format_version(f, path) >= 2:
            return

    def edit(f: h5py.File) -> None:
        names = hdf5.read_spec(f, path).metric_names
        values = [hdf5.read_array(f, m, path) for m in names]
        f.create_dataset(COMPUTED, data=(~np.logical_or.reduce(np.isnan(values))).astype(np.uint8))
        f.attrs["format"] = FORMAT
        f.attrs.setdefault("precision", "fp32")
        f.attrs["generation"] = uuid.uuid4().hex

    atomic_update(path, edit)


def fold_journal(
    path: str | Path,
    attrs: Mapping[str, Any] | None = None,
    then: Callable[[h5py.File], None] | None = None,
) -> None:
    """Write the journal's records (and ``attrs``, and ``then``'s edit) into the file in one
    atomic swap, then drop the journal. A kill between the two re-applies records the file
    already holds: harmless."""
    path = Path(path)

    def edit(f: h5py.File) -> None:
        generation = f.attrs.get("generation")
        names = hdf5.read_spec(f, path).metric_names
        records = read_journal(path, hdf5.attr_to_python(generation), len(names))
        if records:
            indices = np.concatenate([r[0] for r in records])
            chunk = np.concatenate([r[1] for r in records], axis=1)
            for row, metric in enumerate(names):
                current = hdf5.read_array(f, metric, path)
                current.reshape(-1)[indices] = chunk[row]
                f[metric][...] = current
            mask = hdf5.read_array(f, COMPUTED, path)
            mask.reshape(-1)[indices] = 1
            f[COMPUTED][...] = mask
        for key, value in (attrs or {}).items():
            if value is not None:
                f.attrs[key] = python_to_attr(value)
        if then is not None:
            then(f)

    atomic_update(path, edit)
    journal_path(path).unlink(missing_ok=True)


def write_points(
    path: str | Path, flat_indices: np.ndarray, values: Mapping[str, np.ndarray]
) -> None:
    """Store finished points (row-major flat indices) for every metric, in one call."""
    writer = SurfaceWriter(path)
    writer.append(flat_indices, values)
    writer.close()


def mark_complete(
    path: str | Path, *, metrics: Mapping[str, float], attrs: Mapping[str, Any] | None = None
) -> None:
    """Set ``status=complete``, write the ``metrics/`` group and any final provenance attrs."""

    def edit(f: h5py.File) -> None:
        f.attrs["status"] = "complete"
        if "metrics" in f:
            del f["metrics"]
        group = f.create_group("metrics")
        group.attrs["encoding-type"] = "surface-metrics"
        group.attrs["encoding-version"] = ENCODING_VERSION
        for key, value in metrics.items():
            group.attrs[key] = float(value)

    fold_journal(path, attrs, then=edit)


# --------------------------------------------------------------------------- optional groups


def write_group(
    path: str | Path, group_name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> None:
    """Replace the optional top-level group ``group_name`` (e.g. ``hessian``) whole, atomically.

    Analyses computed after the surface (docs/format.md, "Curvature") add their results here
    without touching the surface's own entries; a reader sees the old group or the new one.
    ``attrs`` must carry ``encoding-type`` and ``encoding-version``, like every group;
    containers become JSON text, ``None`` values are skipped.
    """
    path = Path(path)
    if not group_name or "/" in group_name or group_name in CORE_ENTRIES:
        raise SurfaceFileError(
            f"{group_name!r} is not a name for an optional group of a surface file"
        )
    missing = {"encoding-type", "encoding-version"} - set(attrs)
    if missing:
        raise SurfaceFileError(f"group {group_name!r} needs attrs {', '.join(sorted(missing))}")

    def edit(f: h5py.File) -> None:
        hdf5.format_version(f, path)
        if group_name in hdf5.read_spec(f, path).metric_names:
            raise SurfaceFileError(f"{group_name!r} is a metric of {name(path)}, not a group name")
        if group_name in f:
            del f[group_name]
        group = f.create_group(group_name)
        for key, value in attrs.items():
            if value is not None:
                group.attrs[key] = python_to_attr(value)
        for key, array in arrays.items():
            group.create_dataset(key, data=np.asarray(array))

    atomic_update(path, edit)


def read_group(path: str | Path, group_name: str) -> Group | None:
    """``(arrays, attrs)`` of the optional group (dataset paths relative to it, JSON attrs
    decoded), or None when the file has no such group."""
    from landscape.storage.surface_file import read_surface

    return read_surface(path).groups.get(group_name)
