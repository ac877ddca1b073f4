"""The monitor's HDF5 run file: every measurement of a training run, rewritten after each call.

Its ``sharpness/`` group is the surface file's (``landscape.analysis.sharpness.group_contents``:
``step``, ``lambda_max``, ``loss``, ``lr``; ``encoding-type`` ``landscape-sharpness`` v1), so
the sharpness reader (``from_group``), ``landscape sharpness --history run.h5`` and
``storage.write_group`` (to attach it to a surface the service shows) read it as they read
any other. The other groups (``trace/``, ``curve1d/``, ``surface2d/``, ``calls/``) are
documented in docs/monitor.md. The file is written to a temporary name and swapped in, so a
kill mid-write leaves the previous version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.analysis.sharpness import GROUP_NAME, from_group, group_contents
from landscape.errors import SurfaceFileError
from landscape.storage.hdf5 import attr_to_python, python_to_attr

ENCODING_TYPE = "landscape-monitor"
ENCODING_VERSION = "1"


@dataclass
class Slices:
    """The 1-D curves or 2-D surfaces of a run: one loss array per measured step."""

    axes: list[np.ndarray] = field(default_factory=list)  # coordinates along x (then y)
    steps: list[int] = field(default_factory=list)
    losses: list[np.ndarray] = field(default_factory=list)  # each shaped by the axes


@dataclass
class MonitorRun:
    """Everything a monitor measured, in step order."""

    sharpness: list[dict[str, Any]] = field(default_factory=list)  # the sharpness records
    traces: list[dict[str, Any]] = field(default_factory=list)  # step, trace, stderr, samples
    curve1d: Slices = field(default_factory=Slices)
    surface2d: Slices = field(default_factory=Slices)
    calls: list[dict[str, Any]] = field(default_factory=list)  # step, wall_s, budget_s, cuts
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def cuts(self) -> list[dict[str, Any]]:
        """Every cut of every call, each with its step."""
        return [{"step": c["step"], **cut} for c in self.calls for cut in c["cuts"]]


def _group(f: h5py.File, name: str, kind: str, attrs: dict[str, Any] | None = None) -> h5py.Group:
    group = f.create_group(name)
    group.attrs["encoding-type"] = kind
    group.attrs["encoding-version"] = ENCODING_VERSION
    for key, value in (attrs or {}).items():
        if value is not None:
            group.attrs[key] = python_to_attr(value)
    return group


def write_run(path: Path, run: MonitorRun) -> None:
    """Write ``run`` to ``path`` whole, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = ENCODING_TYPE
            f.attrs["encoding-version"] = ENCODING_VERSION
            for key, value in run.attrs.items():
                if value is not None:
                    f.attrs[key] = python_to_attr(value)
            _write_sharpness(f, run)
            _write_traces(f, run.traces)
            for name, slices in (("curve1d", run.curve1d), ("surface2d", run.surface2d)):
                _write_slices(f, name, slices)
            _write_calls(f, run.calls)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_sharpness(f: h5py.File, run: MonitorRun) -> None:
    if not run.sharpness:
        return
    provenance = {key: run.attrs.get(key) for key in ("loss", "n_samples", "model")}
    arrays, attrs = group_contents(run.sharpness, provenance)
    group = _group(f, GROUP_NAME, str(attrs.pop("encoding-type")), attrs)  # its version too
    # beside the four columns every sharpness group has: how each λmax was found
    extra = {
        "matvecs": np.array([r["matvecs"] for r in run.sharpness], np.int64),
        "residual": np.array(
            [np.nan if r.get("residual") is None else r["residual"] for r in run.sharpness],
            np.float64,
        ),
    }
    for key, array in {**arrays, **extra}.items():
        group.create_dataset(key, data=array)
    group.attrs["methods"] = python_to_attr([r["method"] for r in run.sharpness])


def _write_traces(f: h5py.File, traces: list[dict[str, Any]]) -> None:
    if not traces:
        return
    group = _group(f, "trace", "landscape-monitor-trace")
    group.create_dataset("step", data=np.array([t["step"] for t in traces], np.int64))
    group.create_dataset("trace", data=np.array([t["trace"] for t in traces], np.float64))
    stderr = [np.nan if t["stderr"] is None else t["stderr"] for t in traces]
    group.create_dataset("stderr", data=np.array(stderr, np.float64))
    group.create_dataset("samples", data=np.array([t["samples"] for t in traces], np.int64))


def _write_slices(f: h5py.File, name: str, slices: Slices) -> None:
    if not slices.steps:
        return
    group = _group(f, name, f"landscape-monitor-{name}")
    group.create_dataset("step", data=np.array(slices.steps, np.int64))
    for axis, coords in zip("xy", slices.axes, strict=False):
        group.create_dataset(axis, data=coords)
    group.create_dataset("loss", data=np.stack(slices.losses))


def _write_calls(f: h5py.File, calls: list[dict[str, Any]]) -> None:
    if not calls:
        return
    group = _group(f, "calls", "landscape-monitor-calls", {"cuts": [c["cuts"] for c in calls]})
    group.create_dataset("step", data=np.array([c["step"] for c in calls], np.int64))
    group.create_dataset("wall_s", data=np.array([c["wall_s"] for c in calls], np.float64))
    budget = [np.nan if c["budget_s"] is None else c["budget_s"] for c in calls]
    group.create_dataset("budget_s", data=np.array(budget, np.float64))


def attach_sharpness(run_file: str | Path, surface_file: str | Path) -> None:
    """Copy the run's ``sharpness/`` group into a surface file (replacing its own), so the
    surface's page and ``GET /api/surfaces/{id}/sharpness`` show the monitored series."""
    from landscape.storage import write_group

    run_file = Path(run_file)
    read_run(run_file)  # a clear error for a file that is not a run
    with h5py.File(run_file, "r") as f:
        if GROUP_NAME not in f:
            raise SurfaceFileError(f"{run_file.name} holds no λmax (no {GROUP_NAME}/ group)")
        arrays = _arrays(f[GROUP_NAME])
        attrs = {k: attr_to_python(v) for k, v in f[GROUP_NAME].attrs.items()}
    write_group(surface_file, GROUP_NAME, arrays, attrs)


def is_run_file(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file a monitor wrote."""
    try:
        with h5py.File(path, "r") as f:
            return bool(attr_to_python(f.attrs.get("encoding-type")) == ENCODING_TYPE)
    except OSError:
        return False


def read_run(path: str | Path) -> MonitorRun:
    """A run file back as written; a clear error for a missing or foreign file."""
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except (FileNotFoundError, OSError) as exc:
        raise SurfaceFileError(f"cannot open {path.name} as a monitor run file: {exc}") from exc
    with handle as f:
        kind = attr_to_python(f.attrs.get("encoding-type"))
        if kind != ENCODING_TYPE:
            raise SurfaceFileError(
                f"{path.name} is not a monitor run file (encoding-type {kind!r}, "
                f"expected {ENCODING_TYPE!r})"
            )
        try:
            return _read(f)
        except (KeyError, ValueError, TypeError) as exc:
            raise SurfaceFileError(f"{path.name}: cannot read the monitor run: {exc}") from exc


def _arrays(group: h5py.Group) -> dict[str, np.ndarray]:
    return {key: np.asarray(group[key][()]) for key in group}


def _read(f: h5py.File) -> MonitorRun:
    run = MonitorRun(attrs={k: attr_to_python(v) for k, v in f.attrs.items()})
    if GROUP_NAME in f:
        arrays = _arrays(f[GROUP_NAME])
        attrs = {k: attr_to_python(v) for k, v in f[GROUP_NAME].attrs.items()}
        records = from_group(arrays, attrs)
        methods = list(attrs.get("methods") or [])
        for i, record in enumerate(records):
            residual = float(arrays["residual"][i])
            record.update(
                matvecs=int(arrays["matvecs"][i]),
                method=methods[i],
                residual=residual if np.isfinite(residual) else None,
            )
        run.sharpness = records
    if "trace" in f:
        t = _arrays(f["trace"])
        run.traces = [
            {
                "step": int(s),
                "trace": float(v),
                "stderr": float(e) if np.isfinite(e) else None,
                "samples": int(n),
            }
            for s, v, e, n in zip(t["step"], t["trace"], t["stderr"], t["samples"], strict=True)
        ]
    for name, slices in (("curve1d", run.curve1d), ("surface2d", run.surface2d)):
        if name in f:
            a = _arrays(f[name])
            slices.axes = [a[axis] for axis in "xy" if axis in a]
            slices.steps = [int(s) for s in a["step"]]
            slices.losses = list(a["loss"])
    if "calls" in f:
        a = _arrays(f["calls"])
        cuts = attr_to_python(f["calls"].attrs["cuts"])
        run.calls = [
            {
                "step": int(s),
                "wall_s": float(w),
                "budget_s": float(b) if np.isfinite(b) else None,
                "cuts": list(c),
            }
            for s, w, b, c in zip(a["step"], a["wall_s"], a["budget_s"], cuts, strict=True)
        ]
    return run
