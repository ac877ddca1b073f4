"""The surface file itself: create it, resume into it, read it (docs/format.md is the contract).

Format ``landscape-surface/2`` adds to version 1 a ``computed`` mask (so a point computed as NaN
or inf -- a diverged model -- is told apart from one not computed yet), the ``precision`` and
``generation`` root attrs, and paths stored relative to the file's folder. Version 1 files are
read (their mask is "no metric is NaN") and upgraded in place, atomically, when resumed.
Format ``landscape-surface/3`` adds volumes: a ``z`` axis, a third direction and metrics shaped
``(nz, ny, nx)``; its 1D and 2D files are laid out as in version 2.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape.errors import SurfaceFileError
from landscape.explore.spec import EstimateSpec
from landscape.specs import SurfaceSpec, to_dict
from landscape.storage import estimate as estimate_store
from landscape.storage import hdf5
from landscape.storage.estimate import SurfaceEstimate
from landscape.storage.grid import grid_shape, z_coordinates
from landscape.storage.hdf5 import attr_to_python, name, open_file, python_to_attr, read_array
from landscape.storage.journal import journal_path, read_journal
from landscape.storage.keys import (
    FORMAT,
    FORMAT_NAME,
    LEGACY_WEIGHT_NOTE,
    WEIGHT_RULE,
    WEIGHT_RULE_ATTR,
    portable_spec,
    read_as_written,
    resolved_spec,
    spec_differences,
    surface_key,
)

ENCODING_VERSION = "1"
AXES = ("x", "y", "z")  # direction k of the grid, as the file names its group
COMPUTED = "computed"
# Top-level entries that are the surface itself; anything else is an optional group.
CORE_ENTRIES = frozenset({"x", "y", "z", "directions", "metrics", "trajectory", COMPUTED})


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


Group = tuple[dict[str, np.ndarray], dict[str, Any]]


@dataclass
class Surface:
    """A surface file read into memory once (grids are at most a few 10^4 points)."""

    spec: SurfaceSpec  # paths resolved against the file's folder
    status: str  # "partial" | "complete"
    x: np.ndarray  # (nx,)
    y: np.ndarray | None  # (ny,); None for a 1D curve
    values: dict[str, np.ndarray]  # metric name -> (ny, nx) or (nx,); NaN where not computed
    # bool, shaped like a metric: the point was evaluated (maybe to NaN). Left out when a
    # surface is built in memory from finished values: then every non-NaN point.
    computed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    attrs: dict[str, Any] = field(default_factory=dict)  # root attrs, JSON ones decoded
    metrics: dict[str, float] = field(default_factory=dict)  # the metrics/ group's attrs
    key: str = ""
    trajectory: Trajectory | None = None  # the trajectory/ group (PCA directions only)
    groups: dict[str, Group] = field(default_factory=dict)  # optional groups, e.g. hessian
    version: int = 2
    z: np.ndarray | None = None  # (nz,) of a volume, whose values are (nz, ny, nx)
    # an estimated surface's per-point n, standard errors and exact flags (storage.estimate)
    estimate: SurfaceEstimate | None = None

    def __post_init__(self) -> None:
        if self.computed.size == 0 and self.values:
            self.computed = ~np.logical_or.reduce([np.isnan(v) for v in self.values.values()])

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2 if self.z is None else 3

    @property
    def total(self) -> int:
        return self.spec.grid.n_points

    @property
    def done(self) -> int:
        return int(self.computed.sum())

    @property
    def nonfinite(self) -> int:
        """Points computed to NaN or ±inf in some metric (a diverged model, not a gap)."""
        bad = np.zeros(self.computed.shape, dtype=bool)
        for v in self.values.values():
            bad |= ~np.isfinite(v)
        return int((bad & self.computed).sum())

    @property
    def precision(self) -> str:
        return str(self.attrs.get("precision", "fp32"))

    def missing(self) -> np.ndarray:
        """Flat indices (row-major over the values' shape) of points not computed yet,
        ascending."""
        return np.flatnonzero(~self.computed.reshape(-1)).astype(np.int64)


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
    precision: str = "fp32",
) -> Path:
    """Write a new partial surface: coordinates, NaN-filled metrics, directions, provenance.

    ``provenance`` must hold ``checkpoint_sha256`` (it makes the key); its other entries become
    root attrs (containers as JSON text). ``trajectory`` (PCA directions) goes to the
    ``trajectory/`` group. A volume's ``z`` comes from the spec's grid. The file appears
    atomically, complete or not at all.
    """
    path = Path(path)
    if "checkpoint_sha256" not in provenance:
        raise SurfaceFileError("provenance needs 'checkpoint_sha256' to key the surface")
    ndim = spec.grid.ndim
    if len(directions) != ndim:
        raise SurfaceFileError(f"a {ndim}D surface needs {ndim} directions, got {len(directions)}")
    x = np.asarray(x, dtype=np.float64)
    shape = grid_shape(spec.grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    journal_path(path).unlink(missing_ok=True)  # a journal of a file no longer there
    tmp = path.with_name(f".{path.name}.new.tmp")
    try:
        with open_file(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["encoding-type"] = FORMAT_NAME
            f.attrs["encoding-version"] = ENCODING_VERSION
            f.attrs["spec"] = json.dumps(to_dict(portable_spec(spec, path.parent)), sort_keys=True)
            f.attrs["key"] = surface_key(spec, str(provenance["checkpoint_sha256"]), precision)
            f.attrs["precision"] = precision
            f.attrs[WEIGHT_RULE_ATTR] = WEIGHT_RULE  # its absence marks an old-meaning "weight"
            f.attrs["generation"] = uuid.uuid4().hex
            f.attrs["status"] = "partial"
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["ndim"] = ndim
            for key, value in provenance.items():
                if value is not None:
                    f.attrs[key] = python_to_attr(value)
            f.create_dataset("x", data=x).attrs["description"] = "x coordinate of column i"
            if ndim >= 2:
                y = np.asarray(y, dtype=np.float64)
                f.create_dataset("y", data=y).attrs["description"] = "y coordinate of row j"
            if ndim == 3:
                f.create_dataset("z", data=z_coordinates(spec.grid)).attrs["description"] = (
                    "z coordinate of slice k"
                )
            where = "[k, j, i] at (x[i], y[j], z[k])" if ndim == 3 else "[j, i] at (x[i], y[j])"
            for metric in spec.metric_names:
                ds = f.create_dataset(metric, data=np.full(shape, np.nan, dtype=np.float64))
                ds.attrs["description"] = f"value {where}; see computed"
            mask = f.create_dataset(COMPUTED, data=np.zeros(shape, dtype=np.uint8))
            mask.attrs["description"] = "1 where the point was evaluated (its value may be NaN)"
            group = f.create_group("directions")
            group.attrs["encoding-type"] = "direction-set"
            group.attrs["encoding-version"] = ENCODING_VERSION
            for axis, direction in zip(AXES[:ndim], directions, strict=True):
                sub = group.create_group(axis)
                for param, tensor in direction.items():
                    sub.create_dataset(param, data=_tensor_to_numpy(tensor))
            if trajectory is not None:
                _write_trajectory(f, trajectory, ndim)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # bf16/fp16 have no numpy dtype
    return tensor.numpy()


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


def check_matches(
    path: str | Path,
    spec: SurfaceSpec,
    checkpoint_sha256: str,
    precision: str = "fp32",
    estimate: EstimateSpec | None = None,
) -> None:
    """Raise SurfaceFileError unless ``path`` holds the surface of this spec, checkpoint and
    precision (a resume never mixes two requests, nor two precisions, in one file), exact or
    estimated as ``estimate`` says (an estimate never passes for an exact surface)."""
    path = Path(path)
    with open_file(path, "r") as f:
        stored = _stored_spec(f, path, hdf5.format_version(f, path))
        stored_estimate = estimate_store.stored_spec(
            {k: attr_to_python(v) for k, v in f.attrs.items() if k == estimate_store.ESTIMATE_ATTR}
        )
        stored_sha = str(attr_to_python(f.attrs.get("checkpoint_sha256", "")))
        stored_precision = str(attr_to_python(f.attrs.get("precision", "fp32")))
        status = str(attr_to_python(f.attrs.get("status", "partial")))
    if stored_estimate != estimate:
        held = (
            "an exact"
            if stored_estimate is None
            else f"an estimated ({stored_estimate.describe()})"
        )
        asked = "an exact one" if estimate is None else f"an estimate ({estimate.describe()})"
        hint = "--exact to finish it, " if stored_estimate is not None and estimate is None else ""
        raise SurfaceFileError(
            f"{name(path)} holds {held} surface, not {asked}: use {hint}the same --estimate, "
            "or another --out"
        )
    if stored.loss != spec.loss:
        raise SurfaceFileError(
            f"{name(path)} holds a {status} surface computed with loss {stored.loss!r}; "
            f"resuming it with {spec.loss!r} would mix two losses in one surface: "
            f"compute it with loss {stored.loss!r} again, or choose another --out"
        )
    if stored_precision != precision:
        raise SurfaceFileError(
            f"{name(path)} holds a {status} surface computed in precision {stored_precision!r}; "
            f"resuming it in {precision!r} would mix two precisions in one surface: "
            f"use --precision {stored_precision}, or another --out"
        )
    if surface_key(stored, stored_sha) != surface_key(spec, checkpoint_sha256):
        differences = spec_differences(stored, spec)
        if stored_sha != checkpoint_sha256:
            differences.append("checkpoint contents (sha256)")
        raise SurfaceFileError(
            f"{name(path)} holds a {status} surface of a different request "
            f"(differs in: {', '.join(differences) or 'spec'}); "
            "choose another --out or delete the file"
        )


# --------------------------------------------------------------------------- reading


def _stored_spec(f: h5py.File, path: Path, version: int) -> SurfaceSpec:
    """The spec with usable paths: version 2 stores them relative to the file's folder,
    version 1 as the writer was given them; an old-meaning ``weight`` reads as ``global``."""
    spec = read_as_written(hdf5.read_spec(f, path), f.attrs)
    return resolved_spec(spec, path.parent) if version >= 2 else spec


def read_surface(path: str | Path) -> Surface:
    """The whole surface but its directions, journal folded in, in one open of the file.

    Any damage (a truncated or corrupted file) is a ``SurfaceFileError`` naming the file."""
    path = Path(path)
    try:
        return _read_surface(path)
    except SurfaceFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise SurfaceFileError(f"{name(path)} is damaged: {exc}") from exc


def _read_surface(path: Path) -> Surface:
    with open_file(path, "r") as f:
        version = hdf5.format_version(f, path)
        spec = _stored_spec(f, path, version)
        x = read_array(f, "x", path).astype(np.float64)
        y = read_array(f, "y", path).astype(np.float64) if spec.grid.ndim >= 2 else None
        z = read_array(f, "z", path).astype(np.float64) if spec.grid.ndim == 3 else None
        values = {m: read_array(f, m, path).astype(np.float64) for m in spec.metric_names}
        expected = (len(x),) if y is None else (len(y), len(x))
        expected = expected if z is None else (len(z), *expected)
        for metric, array in values.items():
            if array.shape != expected:
                raise SurfaceFileError(
                    f"{name(path)}: dataset {metric!r} has shape {array.shape}, expected {expected}"
                )
        if version >= 2:
            computed = read_array(f, COMPUTED, path).astype(bool).reshape(expected)
        else:  # version 1: NaN in any metric meant "not computed"
            computed = ~np.logical_or.reduce([np.isnan(v) for v in values.values()])
        try:
            attrs = {k: attr_to_python(v) for k, v in f.attrs.items()}
        except (OSError, RuntimeError) as exc:
            raise SurfaceFileError(f"{name(path)}: cannot read its attributes: {exc}") from exc
        if WEIGHT_RULE_ATTR not in attrs and spec.directions.normalization == "global":
            attrs["normalization"] = "global"  # "global" was never written without the attr
            attrs["normalization_note"] = LEGACY_WEIGHT_NOTE
        metrics: dict[str, float] = {}
        if "metrics" in f:
            metrics = {k: float(v) for k, v in f["metrics"].attrs.items() if k[:9] != "encoding-"}
        trajectory = _read_trajectory(f, path)
        groups = {
            key: _read_group(f, key, path)
            for key in f
            if key not in CORE_ENTRIES
            and key not in values
            and key != estimate_store.GROUP
            and isinstance(f[key], h5py.Group)
        }
        estimated = None
        if estimate_store.ESTIMATE_ATTR in attrs and estimate_store.GROUP in f:
            generation = attrs.get("generation")
            estimated = estimate_store.read_estimate(
                path, f, computed.shape, str(generation) if generation else None
            )
    if version >= 2:
        _fold(path, attrs.get("generation"), spec.metric_names, values, computed)
    if estimated is not None:
        estimate_store.overlay(estimated, values, computed)
    return Surface(
        spec=spec,
        status=str(attrs.get("status", "partial")),
        x=x,
        y=y,
        values=values,
        computed=computed,
        attrs=attrs,
        metrics=metrics,
        key=str(attrs.get("key", "")),
        trajectory=trajectory,
        groups=groups,
        version=version,
        z=z,
        estimate=estimated,
    )


def _fold(
    path: Path,
    generation: Any,
    metric_names: tuple[str, ...],
    values: dict[str, np.ndarray],
    computed: np.ndarray,
) -> None:
    """Apply the journal's records to arrays read from the file (in place)."""
    records = read_journal(path, str(generation) if generation else None, len(metric_names))
    flat_mask = computed.reshape(-1)
    for indices, chunk in records:
        if len(indices) and (indices.min() < 0 or indices.max() >= flat_mask.size):
            raise SurfaceFileError(f"{name(path)}: its journal names points outside the grid")
        for row, metric in enumerate(metric_names):
            values[metric].reshape(-1)[indices] = chunk[row]
        flat_mask[indices] = True


def _read_trajectory(f: h5py.File, path: Path) -> Trajectory | None:
    if "trajectory" not in f:
        return None
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in read_array(f, "trajectory/names", path)
    )
    ratio = np.asarray(f["trajectory"].attrs.get("explained_variance_ratio", []), dtype=float)
    return Trajectory(
        coords=read_array(f, "trajectory/coords", path).astype(np.float64),
        epochs=read_array(f, "trajectory/epochs", path).astype(np.int64),
        names=names,
        explained_variance_ratio=tuple(float(r) for r in ratio.ravel()),
    )


def _read_group(f: h5py.File, key: str, path: Path) -> Group:
    group = f[key]
    names: list[str] = []
    group.visititems(lambda k, obj: names.append(k) if isinstance(obj, h5py.Dataset) else None)
    arrays = {k: read_array(f, f"{key}/{k}", path) for k in names}
    return arrays, {k: attr_to_python(v) for k, v in group.attrs.items()}


def read_directions(path: str | Path) -> list[dict[str, torch.Tensor]]:
    """The stored directions (x, then y, then z) keyed by parameter name, as CPU tensors."""
    path = Path(path)
    with open_file(path, "r") as f:
        hdf5.format_version(f, path)
        ndim = hdf5.read_spec(f, path).grid.ndim
        directions = []
        for axis in AXES[:ndim]:
            key = f"directions/{axis}"
            if key not in f:
                raise SurfaceFileError(f"{name(path)}: cannot read {key!r}: missing group")
            directions.append(
                {p: torch.from_numpy(read_array(f, f"{key}/{p}", path)) for p in f[key]}
            )
    return directions


def missing_points(path: str | Path) -> np.ndarray:
    """Flat indices (row-major over the values' shape) of points not computed yet, ascending."""
    return read_surface(path).missing()
