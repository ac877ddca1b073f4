"""The HDF5 surface file: the contract between the worker, the API, the web page and users.

Layout and every attribute are documented in ``docs/format.md``; this module is its only writer.
Design choices that matter to callers:

- Files are opened per operation inside ``with h5py.File(...)`` so a reader (the API) and the
  writer (a worker) in different processes take turns; lock contention is retried briefly.
- Every change after creation is written to a copy that replaces the file atomically
  (``os.replace``): ``kill -9`` at any moment leaves either the old or the new file, never a
  half-written one, so a partial surface is always resumable.
- Values are laid out ``(ny, nx)`` -- value ``[j, i]`` is at ``(x[i], y[j])``, the layout
  Plotly's ``surface`` expects -- and flat indices are row-major over that shape (x fastest).
  The reference tool mixed the axis order up and transposed non-square grids; tests pin ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape.errors import LandscapeError, SurfaceFileError
from landscape.specs import GridSpec, SurfaceSpec, from_dict, to_dict

log = logging.getLogger(__name__)

FORMAT = "landscape-surface/1"
FORMAT_NAME, FORMAT_VERSION = "landscape-surface", 1
ENCODING_VERSION = "1"
LOCK_RETRY_S = 10.0  # how long to wait for another process's HDF5 lock before giving up

# Spec fields that locate inputs without changing the numbers: left out of the cache key so the
# CLI and the API (different data roots, a download flag) find the same surface.
_KEY_IGNORED_DATA_FIELDS = ("data_root", "download")


@dataclass
class Surface:
    """A surface file read into memory (small: grids are at most a few 10^4 points)."""

    spec: SurfaceSpec
    status: str  # "partial" | "complete"
    x: np.ndarray  # (nx,)
    y: np.ndarray | None  # (ny,); None for a 1D curve
    values: dict[str, np.ndarray]  # metric name -> (ny, nx) or (nx,); NaN = not computed
    attrs: dict[str, Any] = field(default_factory=dict)  # root attrs, JSON ones decoded
    metrics: dict[str, float] = field(default_factory=dict)  # the metrics/ group's attrs
    key: str = ""
    trajectory: Trajectory | None = None  # the trajectory/ group (PCA directions only)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def total(self) -> int:
        return self.spec.grid.n_points

    @property
    def done(self) -> int:
        return self.total - int(_missing_mask(self.values).sum())


@dataclass(frozen=True)
class Trajectory:
    """The training path drawn on a PCA surface (Li et al. 2018, §7).

    ``coords[k]`` is snapshot ``k`` projected onto the stored directions, in the grid's units:
    ``snapshot_k ≈ θ + coords[k, 0]·δ + coords[k, 1]·η`` (the final weights θ sit at 0).
    """

    coords: np.ndarray  # (n_snapshots, ndim), float64
    epochs: np.ndarray  # (n_snapshots,), int64; the position in the list when not known
    names: tuple[str, ...]  # snapshot file names, in trajectory order
    explained_variance_ratio: tuple[float, ...]  # of each direction, in [0, 1]

    def __post_init__(self) -> None:
        n = len(self.coords)
        if self.coords.ndim != 2 or len(self.epochs) != n or len(self.names) != n:
            raise SurfaceFileError(
                f"trajectory of {n} coordinates needs as many epochs ({len(self.epochs)}) "
                f"and names ({len(self.names)}), and coords shaped (n, ndim)"
            )


# --------------------------------------------------------------------------- keys, grids


def surface_key(spec: SurfaceSpec, checkpoint_sha256: str) -> str:
    """The surface id: a digest of what determines the numbers.

    The checkpoint enters by its bytes (sha256), not its path, so a moved or re-uploaded
    checkpoint finds the same surface; the format name is hashed in so a format change cannot
    serve a stale file.
    """
    payload = to_dict(spec)
    del payload["checkpoint"]
    for name in _KEY_IGNORED_DATA_FIELDS:
        payload["data"].pop(name, None)
    blob = json.dumps(
        {"format": FORMAT, "checkpoint_sha256": checkpoint_sha256, "spec": payload},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def grid_coordinates(grid: GridSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (nx,) and ``y`` (ny,) or None: evenly spaced, both ends included (float64)."""
    x = np.linspace(grid.x_range[0], grid.x_range[1], grid.n_x, dtype=np.float64)
    if grid.n_y is None or grid.y_range is None:
        return x, None
    return x, np.linspace(grid.y_range[0], grid.y_range[1], grid.n_y, dtype=np.float64)


def flat_coordinates(x: np.ndarray, y: np.ndarray | None, flat_indices: np.ndarray) -> np.ndarray:
    """``(K, ndim)`` grid coordinates of row-major flat indices (x varies fastest)."""
    flat_indices = np.asarray(flat_indices, dtype=np.int64)
    if y is None:
        coords: np.ndarray = x[flat_indices][:, None]
        return coords
    j, i = np.divmod(flat_indices, len(x))
    return np.stack([x[i], y[j]], axis=1)


# --------------------------------------------------------------------------- low-level I/O


def _is_lock_error(exc: OSError) -> bool:
    text = str(exc).lower()
    return "unable to lock" in text or "temporarily unavailable" in text


@contextlib.contextmanager
def _open(path: Path, mode: str) -> Iterator[h5py.File]:
    """``h5py.File`` with brief retries while another process holds the lock."""
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            handle = h5py.File(path, mode)
            break
        except FileNotFoundError as exc:
            raise SurfaceFileError(f"no surface file at {str(path)!r}") from exc
        except OSError as exc:
            if _is_lock_error(exc) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if mode == "r" and not path.exists():
                raise SurfaceFileError(f"no surface file at {str(path)!r}") from exc
            raise SurfaceFileError(f"cannot open {str(path)!r} as HDF5: {exc}") from exc
    with handle:
        yield handle


def _atomic_update(path: Path, edit: Callable[[h5py.File], None]) -> None:
    """Apply ``edit`` to a copy of ``path`` and swap it in, so a kill never corrupts ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(path, tmp)
    except FileNotFoundError as exc:
        raise SurfaceFileError(f"no surface file at {str(path)!r}") from exc
    try:
        with _open(tmp, "r+") as handle:
            edit(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(handle: h5py.File, key: str, path: Path) -> np.ndarray:
    """One dataset as an array; any failure names the file and the HDF5 key."""
    try:
        array: np.ndarray = np.asarray(handle[key][()])
        return array
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise SurfaceFileError(f"{str(path)!r}: cannot read {key!r}: {exc}") from exc


def _attr_to_python(value: Any) -> Any:
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


def _python_to_attr(value: Any) -> Any:
    """Scalars as themselves, containers as JSON text; ``None`` is not storable (skipped)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def _check_format(handle: h5py.File, path: Path) -> None:
    fmt = handle.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_NAME + "/"):
        raise SurfaceFileError(
            f"{str(path)!r} is not a landscape surface file (format attribute {fmt!r}; "
            f"expected {FORMAT!r})"
        )
    version = fmt.rsplit("/", 1)[1]
    if version != str(FORMAT_VERSION):
        raise SurfaceFileError(
            f"{str(path)!r} has format {fmt!r}, which this landscape cannot read "
            f"(it reads {FORMAT!r}); upgrade landscape or recompute the surface"
        )


def _read_spec(handle: h5py.File, path: Path) -> SurfaceSpec:
    try:
        return from_dict(SurfaceSpec, json.loads(handle.attrs["spec"]))
    except (KeyError, TypeError, ValueError, LandscapeError) as exc:
        raise SurfaceFileError(f"{str(path)!r}: cannot read attribute 'spec': {exc}") from exc


# --------------------------------------------------------------------------- writing


def create_surface_file(
    path: str | Path,
    spec: SurfaceSpec,
    *,
    x: np.ndarray,
    y: np.ndarray | None,
    directions: Sequence[Mapping[str, torch.Tensor]],
    provenance: Mapping[str, Any],
    trajectory: Trajectory | None = None,
) -> Path:
    """Write a new partial surface: coordinates, NaN-filled metrics, directions, provenance.

    ``provenance`` must hold ``checkpoint_sha256`` (it makes the key); its other entries become
    root attrs (containers as JSON text). ``trajectory`` (PCA directions) goes to the
    ``trajectory/`` group. The file appears atomically, complete or not at all.
    """
    path = Path(path)
    if "checkpoint_sha256" not in provenance:
        raise SurfaceFileError("provenance needs 'checkpoint_sha256' to key the surface")
    ndim = spec.grid.ndim
    if len(directions) != ndim:
        raise SurfaceFileError(f"a {ndim}D surface needs {ndim} directions, got {len(directions)}")
    x = np.asarray(x, dtype=np.float64)
    shape: tuple[int, ...] = (len(x),)
    if ndim == 2:
        assert y is not None, "2D surface without y coordinates"
        y = np.asarray(y, dtype=np.float64)
        shape = (len(y), len(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _open(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["encoding-type"] = FORMAT_NAME
            f.attrs["encoding-version"] = ENCODING_VERSION
            f.attrs["spec"] = json.dumps(to_dict(spec), sort_keys=True)
            f.attrs["key"] = surface_key(spec, str(provenance["checkpoint_sha256"]))
            f.attrs["status"] = "partial"
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["ndim"] = ndim
            for name, value in provenance.items():
                if value is not None:
                    f.attrs[name] = _python_to_attr(value)
            f.create_dataset("x", data=x).attrs["description"] = "x coordinate of column i"
            if ndim == 2:
                f.create_dataset("y", data=y).attrs["description"] = "y coordinate of row j"
            for metric in spec.metric_names:
                ds = f.create_dataset(metric, data=np.full(shape, np.nan, dtype=np.float64))
                ds.attrs["description"] = "value [j, i] at (x[i], y[j]); NaN = not computed"
            group = f.create_group("directions")
            group.attrs["encoding-type"] = "direction-set"
            group.attrs["encoding-version"] = ENCODING_VERSION
            for axis, direction in zip(("x", "y")[:ndim], directions, strict=True):
                sub = group.create_group(axis)
                for name, tensor in direction.items():
                    sub.create_dataset(name, data=_tensor_to_numpy(tensor))
            if trajectory is not None:
                _write_trajectory(f, trajectory, ndim)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_trajectory(f: h5py.File, trajectory: Trajectory, ndim: int) -> None:
    """The ``trajectory/`` group (docs/format.md): coordinates, epochs, names, variance."""
    coords = np.asarray(trajectory.coords, dtype=np.float64)
    if coords.shape[1] != ndim:
        raise SurfaceFileError(f"trajectory coords have {coords.shape[1]} columns, need {ndim}")
    group = f.create_group("trajectory")
    group.attrs["encoding-type"] = "trajectory"
    group.attrs["encoding-version"] = ENCODING_VERSION
    group.attrs["explained_variance_ratio"] = np.asarray(
        trajectory.explained_variance_ratio, dtype=np.float64
    )
    group.create_dataset("coords", data=coords).attrs["description"] = (
        "snapshot k at θ + coords[k, 0]·δ + coords[k, 1]·η (projection, direction units)"
    )
    group.create_dataset("epochs", data=np.asarray(trajectory.epochs, dtype=np.int64))
    group.create_dataset("names", data=list(trajectory.names), dtype=h5py.string_dtype())


def _read_trajectory(f: h5py.File, path: Path) -> Trajectory | None:
    if "trajectory" not in f:
        return None
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n) for n in _read(f, "trajectory/names", path)
    )
    ratio = np.asarray(f["trajectory"].attrs.get("explained_variance_ratio", []), dtype=float)
    return Trajectory(
        coords=_read(f, "trajectory/coords", path).astype(np.float64),
        epochs=_read(f, "trajectory/epochs", path).astype(np.int64),
        names=names,
        explained_variance_ratio=tuple(float(r) for r in ratio.ravel()),
    )


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # bf16/fp16 have no numpy dtype
    return tensor.numpy()


def open_or_create(
    path: str | Path,
    spec: SurfaceSpec,
    *,
    x: np.ndarray,
    y: np.ndarray | None,
    directions: Sequence[Mapping[str, torch.Tensor]],
    provenance: Mapping[str, Any],
    trajectory: Trajectory | None = None,
) -> bool:
    """Create ``path`` unless a file for the same request is there; True when created.

    An existing file (partial or complete) made from a different spec or checkpoint is refused
    rather than overwritten or mixed into.
    """
    path = Path(path)
    if path.exists():
        check_matches(path, spec, str(provenance["checkpoint_sha256"]))
        return False
    create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance=provenance, trajectory=trajectory
    )
    return True


def check_matches(path: str | Path, spec: SurfaceSpec, checkpoint_sha256: str) -> None:
    """Raise SurfaceFileError unless ``path`` holds the surface of this spec and checkpoint."""
    path = Path(path)
    with _open(path, "r") as f:
        _check_format(f, path)
        stored = _read_spec(f, path)
        stored_sha = str(_attr_to_python(f.attrs.get("checkpoint_sha256", "")))
        status = str(_attr_to_python(f.attrs.get("status", "partial")))
    wanted = surface_key(spec, checkpoint_sha256)
    if surface_key(stored, stored_sha) != wanted:
        differences = _spec_differences(stored, spec)
        if stored_sha != checkpoint_sha256:
            differences.append("checkpoint contents (sha256)")
        raise SurfaceFileError(
            f"{str(path)!r} holds a {status} surface of a different request "
            f"(differs in: {', '.join(differences) or 'spec'}); "
            "choose another --out or delete the file"
        )


def _spec_differences(a: SurfaceSpec, b: SurfaceSpec) -> list[str]:
    """Dotted names of the spec fields that differ, for an error a user can act on."""

    def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flatten(to_dict(a)), flatten(to_dict(b))
    ignored = {"checkpoint", *(f"data.{n}" for n in _KEY_IGNORED_DATA_FIELDS)}
    return sorted(k for k in fa.keys() | fb.keys() if k not in ignored and fa.get(k) != fb.get(k))


def write_points(
    path: str | Path, flat_indices: np.ndarray, values: Mapping[str, np.ndarray]
) -> None:
    """Store finished grid points (row-major flat indices) for every metric in ``values``."""
    path = Path(path)
    flat_indices = np.asarray(flat_indices, dtype=np.int64)

    def edit(f: h5py.File) -> None:
        for metric, new in values.items():
            if metric not in f:
                raise SurfaceFileError(f"{str(path)!r}: no metric dataset {metric!r}")
            current = _read(f, metric, path)
            flat = current.reshape(-1)  # a view: C order, x fastest
            flat[flat_indices] = np.asarray(new, dtype=np.float64)
            f[metric][...] = current

    _atomic_update(path, edit)


def mark_complete(
    path: str | Path, *, metrics: Mapping[str, float], attrs: Mapping[str, Any] | None = None
) -> None:
    """Set ``status=complete``, write the ``metrics/`` group and any final provenance attrs."""
    path = Path(path)

    def edit(f: h5py.File) -> None:
        f.attrs["status"] = "complete"
        for name, value in (attrs or {}).items():
            if value is not None:
                f.attrs[name] = _python_to_attr(value)
        if "metrics" in f:
            del f["metrics"]
        group = f.create_group("metrics")
        group.attrs["encoding-type"] = "surface-metrics"
        group.attrs["encoding-version"] = ENCODING_VERSION
        for name, value in metrics.items():
            group.attrs[name] = float(value)

    _atomic_update(path, edit)


def update_attrs(path: str | Path, attrs: Mapping[str, Any]) -> None:
    """Overwrite root attrs (e.g. the accumulated wall time of an interrupted run)."""

    def edit(f: h5py.File) -> None:
        for name, value in attrs.items():
            if value is not None:
                f.attrs[name] = _python_to_attr(value)

    _atomic_update(Path(path), edit)


# --------------------------------------------------------------------------- reading


def _missing_mask(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Flat mask of points where any metric is still NaN."""
    arrays = [np.isnan(v).reshape(-1) for v in values.values()]
    return np.logical_or.reduce(arrays) if arrays else np.zeros(0, dtype=bool)


def missing_points(path: str | Path) -> np.ndarray:
    """Flat indices (row-major over ``(ny, nx)``) of points not yet computed, ascending."""
    path = Path(path)
    with _open(path, "r") as f:
        _check_format(f, path)
        spec = _read_spec(f, path)
        values = {m: _read(f, m, path) for m in spec.metric_names}
    return np.flatnonzero(_missing_mask(values)).astype(np.int64)


def read_directions(path: str | Path) -> list[dict[str, torch.Tensor]]:
    """The stored directions (x, then y) keyed by parameter name, as CPU tensors."""
    path = Path(path)
    with _open(path, "r") as f:
        _check_format(f, path)
        ndim = _read_spec(f, path).grid.ndim
        directions = []
        for axis in ("x", "y")[:ndim]:
            key = f"directions/{axis}"
            if key not in f:
                raise SurfaceFileError(f"{str(path)!r}: cannot read {key!r}: missing group")
            group = f[key]
            directions.append(
                {name: torch.from_numpy(_read(f, f"{key}/{name}", path)) for name in group}
            )
    return directions


def read_surface(path: str | Path) -> Surface:
    """Everything but the directions (those are only needed to rebuild points)."""
    path = Path(path)
    with _open(path, "r") as f:
        _check_format(f, path)
        spec = _read_spec(f, path)
        x = _read(f, "x", path).astype(np.float64)
        y = _read(f, "y", path).astype(np.float64) if spec.grid.ndim == 2 else None
        values = {m: _read(f, m, path).astype(np.float64) for m in spec.metric_names}
        attrs = {k: _attr_to_python(v) for k, v in f.attrs.items()}
        metrics: dict[str, float] = {}
        if "metrics" in f:
            metrics = {k: float(v) for k, v in f["metrics"].attrs.items() if k[:9] != "encoding-"}
        trajectory = _read_trajectory(f, path)
    expected = (len(x),) if y is None else (len(y), len(x))
    for metric, array in values.items():
        if array.shape != expected:
            raise SurfaceFileError(
                f"{str(path)!r}: dataset {metric!r} has shape {array.shape}, expected {expected}"
            )
    return Surface(
        spec=spec,
        status=str(attrs.get("status", "partial")),
        x=x,
        y=y,
        values=values,
        attrs=attrs,
        metrics=metrics,
        key=str(attrs.get("key", "")),
        trajectory=trajectory,
    )


def surface_summary(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description without the arrays: what lists, ``info`` and the API show."""
    surface = read_surface(path)
    spec, attrs = surface.spec, surface.attrs
    return {
        "id": surface.key,
        "path": str(path),
        "status": surface.status,
        "model": attrs.get("model"),
        "dataset": spec.data.name,
        "ndim": spec.grid.ndim,
        "grid": {
            "nx": spec.grid.n_x,
            "ny": spec.grid.n_y,
            "xrange": list(spec.grid.x_range),
            "yrange": list(spec.grid.y_range) if spec.grid.y_range is not None else None,
        },
        "metrics": list(spec.metric_names),
        "done": surface.done,
        "total": surface.total,
        "created": attrs.get("created"),
        "stats": dict(surface.metrics),
        "has_trajectory": surface.trajectory is not None,
        "spec": to_dict(spec),
        "provenance": {
            k: v
            for k, v in attrs.items()
            if k not in {"format", "encoding-type", "encoding-version", "spec", "status", "key"}
        },
    }


# --------------------------------------------------------------------------- optional groups

# Entries a group written by ``write_group`` may never replace: the surface itself.
_CORE_ENTRIES = frozenset({"x", "y", "directions", "metrics", "trajectory"})


def write_group(
    path: str | Path, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> None:
    """Replace the optional top-level group ``name`` (e.g. ``hessian``) as a whole, atomically.

    Analyses computed after the surface (docs/format.md, "Curvature") add their results here
    without touching the surface's own entries; a reader sees the old group or the new one.
    ``attrs`` must carry ``encoding-type`` and ``encoding-version``, like every group;
    containers become JSON text, ``None`` values are skipped.
    """
    path = Path(path)
    if not name or "/" in name or name in _CORE_ENTRIES:
        raise SurfaceFileError(f"{name!r} is not a name for an optional group of a surface file")
    missing = {"encoding-type", "encoding-version"} - set(attrs)
    if missing:
        raise SurfaceFileError(f"group {name!r} needs attrs {', '.join(sorted(missing))}")

    def edit(f: h5py.File) -> None:
        _check_format(f, path)
        if name in _read_spec(f, path).metric_names:
            raise SurfaceFileError(f"{name!r} is a metric of {str(path)!r}, not a group name")
        if name in f:
            del f[name]
        group = f.create_group(name)
        for key, value in attrs.items():
            if value is not None:
                group.attrs[key] = _python_to_attr(value)
        for key, array in arrays.items():
            group.create_dataset(key, data=np.asarray(array))

    _atomic_update(path, edit)


def read_group(path: str | Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(arrays, attrs)`` of the optional group ``name`` (dataset paths relative to it, JSON
    attrs decoded), or None when the file has no such group."""
    path = Path(path)
    with _open(path, "r") as f:
        _check_format(f, path)
        if name not in f:
            return None
        group = f[name]
        if not isinstance(group, h5py.Group):
            raise SurfaceFileError(f"{str(path)!r}: {name!r} is not a group")
        keys: list[str] = []
        group.visititems(
            lambda key, obj: keys.append(key) if isinstance(obj, h5py.Dataset) else None
        )
        arrays = {key: _read(f, f"{name}/{key}", path) for key in keys}
        attrs = {k: _attr_to_python(v) for k, v in group.attrs.items()}
    return arrays, attrs
