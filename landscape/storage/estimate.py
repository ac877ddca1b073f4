"""The ``estimate/`` group of an estimated surface, and its own journal of finished stages.

An estimated surface is a surface file whose metric datasets hold estimates; the group holds
what makes them (docs/format.md, "Estimated surfaces"): per split the shared permutation, the
centre's per-sample loss, correct flag and stratum, and per point the running sums per
stratum (``landscape.explore.estimator``) from which the estimate, its standard error, ``n``
and whether it is exact follow. Each finished stage of a chunk of points is one record of
``<file>.estimate.journal`` (the chunk journal's format, ``journal.py``) holding the points'
whole new sums, so re-applying a record is harmless and a kill -9 loses at most the stage
being computed. ``fold_estimate`` writes the journal, the derived per-point arrays and the
metric datasets into the file in one atomic swap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import SurfaceFileError
from landscape.explore.estimator import Centre, estimate, n_sums
from landscape.explore.spec import EstimateSpec
from landscape.storage import hdf5
from landscape.storage.hdf5 import atomic_update, name, python_to_attr, read_array
from landscape.storage.journal import JournalWriter, journal_path, read_journal

GROUP = "estimate"
ENCODING_TYPE = "surface-estimate"
ENCODING_VERSION = "2"  # 1: unstratified, seven sums per point (read no more)
ESTIMATE_ATTR = "estimate"  # root attr: the EstimateSpec as JSON; absent on exact surfaces
STOPPING_RULE = (
    "at most four looks with an error: a first stage of first_stage samples, then looks "
    "planned from the point's own standard error (the prefix its target asks for, at least "
    "1.25× the last, rounded up to the ladder first_stage·2^(k/4)); a point stops at the "
    "first look whose z·SE of every split's loss is within the target, else it is read whole "
    "(n = N, no error); z = Φ⁻¹(1 − (1 − level)/(2·L)), L the looks with an error "
    "(Bonferroni), so the stated intervals hold after optional stopping"
)


@dataclass(frozen=True)
class SplitEstimate:
    """One split's state: centre values and permutation (length N), sums per flat point."""

    centre: Centre
    permutation: np.ndarray  # (N,) int64
    sums: np.ndarray  # (P, n_sums) float64: n, looks, sums per stratum; n = 0: not sampled
    z: float  # the simultaneous quantile its intervals are stated at
    stages: np.ndarray  # the ladder of prefix lengths a point's looks are rounded up to

    @property
    def size(self) -> int:
        return self.centre.size

    def n(self) -> np.ndarray:
        return self.sums[:, 0].astype(np.int64)


@dataclass
class SurfaceEstimate:
    """An estimated surface's per-point state; arrays flat (row-major over ``shape``)."""

    spec: EstimateSpec
    splits: dict[str, SplitEstimate]
    shape: tuple[int, ...]

    def value(self, split: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(estimate, standard error)`` per flat point; NaN where not sampled yet."""
        part = self.splits[split]
        return estimate(part.sums, part.centre, metric, self.spec.method)

    def exact(self) -> np.ndarray:
        """Points whose every split has been read whole (n = N): the full-pass values."""
        out: np.ndarray = np.logical_and.reduce([s.n() >= s.size for s in self.splits.values()])
        return out

    def sampled(self) -> np.ndarray:
        out: np.ndarray = np.logical_and.reduce([s.n() > 0 for s in self.splits.values()])
        return out

    def grid(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self.shape)


def estimate_key(base_key: str, spec: EstimateSpec) -> str:
    """An estimated surface's id: the exact surface's key, the estimate spec (target, seed,
    method, stages) and the encoding's version, hashed together, so an estimate never shares a
    cache entry with an exact surface or with one made by another scheme."""
    blob = json.dumps(
        {"surface": base_key, "estimate": asdict(spec), "encoding": ENCODING_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def spec_json(spec: EstimateSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def stored_spec(attrs: Mapping[str, Any]) -> EstimateSpec | None:
    """The EstimateSpec a file's root attrs name, or None for an exact surface."""
    raw = attrs.get(ESTIMATE_ATTR)
    if raw is None:
        return None
    data = raw if isinstance(raw, Mapping) else json.loads(str(raw))
    return EstimateSpec(**data)


def add_estimate(
    path: Path,
    spec: EstimateSpec,
    centre: Mapping[str, Centre],
    permutations: Mapping[str, np.ndarray],
    z: Mapping[str, float],
    stages: Mapping[str, np.ndarray],
    n_points: int,
) -> None:
    """Give a surface file created for an estimate (its ``estimate`` and ``key`` root attrs
    set at creation) the group, once the centre is known (one atomic swap)."""

    def edit(f: h5py.File) -> None:
        f.attrs[ESTIMATE_ATTR] = spec_json(spec)
        group = f.require_group(GROUP)
        group.attrs["encoding-type"] = ENCODING_TYPE
        group.attrs["encoding-version"] = ENCODING_VERSION
        group.attrs["method"] = spec.method
        group.attrs["seed"] = spec.seed
        group.attrs["target"] = spec.target
        group.attrs["relative"] = spec.relative
        group.attrs["level"] = spec.level
        group.attrs["stopping_rule"] = STOPPING_RULE
        for split, c in centre.items():
            sub = group.require_group(split)
            sub.attrs["z"] = float(z[split])
            sub.create_dataset("stages", data=np.asarray(stages[split], dtype=np.int64))
            sub.create_dataset("permutation", data=np.asarray(permutations[split], np.int64))
            sub.create_dataset("centre_loss", data=c.loss)
            sub.create_dataset("centre_correct", data=c.correct.astype(np.uint8))
            sub.create_dataset("centre_stratum", data=c.stratum.astype(np.int32))
            sub.create_dataset("sums", data=np.zeros((n_points, n_sums(c.n_strata))))

    atomic_update(path, edit)


def journal_stem(path: Path) -> Path:
    """The name the estimate journal hangs off (``<file>.estimate`` + ``.journal``)."""
    return path.with_name(path.name + ".estimate")


def read_estimate(
    path: Path, f: h5py.File, shape: tuple[int, ...], generation: str | None
) -> SurfaceEstimate:
    """The group as stored, with the estimate journal's records applied."""
    spec = stored_spec({k: hdf5.attr_to_python(v) for k, v in f.attrs.items()})
    if spec is None or GROUP not in f:
        raise SurfaceFileError(f"{name(path)} is not an estimated surface")
    version = str(hdf5.attr_to_python(f[GROUP].attrs.get("encoding-version", "")))
    if version != ENCODING_VERSION:
        raise SurfaceFileError(
            f"{name(path)} holds an estimate of encoding {version or 'unknown'}, made by an "
            f"older landscape (this one reads {ENCODING_VERSION}): estimate it again into "
            "another file"
        )
    splits: dict[str, SplitEstimate] = {}
    for split in sorted(k for k in f[GROUP] if isinstance(f[GROUP][k], h5py.Group)):
        key = f"{GROUP}/{split}"
        splits[split] = SplitEstimate(
            centre=Centre(
                loss=read_array(f, f"{key}/centre_loss", path).astype(np.float64),
                correct=read_array(f, f"{key}/centre_correct", path).astype(np.float64),
                stratum=read_array(f, f"{key}/centre_stratum", path).astype(np.int64),
            ),
            permutation=read_array(f, f"{key}/permutation", path).astype(np.int64),
            sums=read_array(f, f"{key}/sums", path).astype(np.float64),
            z=float(f[key].attrs["z"]),
            stages=read_array(f, f"{key}/stages", path).astype(np.int64),
        )
    state = SurfaceEstimate(spec=spec, splits=splits, shape=shape)
    _apply_journal(path, state, generation)
    return state


def _apply_journal(path: Path, state: SurfaceEstimate, generation: str | None) -> None:
    names = sorted(state.splits)
    n_points = int(np.prod(state.shape))
    widths = [state.splits[s].sums.shape[1] for s in names]
    starts = np.concatenate([[0], np.cumsum(widths)])
    for indices, values in read_journal(journal_stem(path), generation, int(starts[-1])):
        if len(indices) and (indices.min() < 0 or indices.max() >= n_points):
            raise SurfaceFileError(f"{name(path)}: its estimate journal names points off the grid")
        for k, split in enumerate(names):
            state.splits[split].sums[indices] = values[starts[k] : starts[k + 1]].T


class EstimateWriter:
    """Appends finished stages (whole sums of the points they moved) for one file."""

    def __init__(self, path: Path, splits: list[str]) -> None:
        self.path, self.splits = path, sorted(splits)
        with hdf5.open_file(path, "r") as f:
            generation = str(hdf5.attr_to_python(f.attrs["generation"]))
        self.journal = JournalWriter(journal_stem(path), generation)

    def append(self, indices: np.ndarray, state: SurfaceEstimate) -> None:
        """Record the current sums of the flat ``indices`` (every split)."""
        rows = [state.splits[s].sums[indices].T for s in self.splits]
        self.journal.append(np.asarray(indices, dtype=np.int64), np.concatenate(rows, axis=0))

    def close(self) -> None:
        self.journal.close()


def fold_estimate(path: Path, attrs: Mapping[str, Any] | None = None) -> None:
    """Write the journal's sums, the derived per-point arrays (``n``, ``loss_se``,
    ``acc_se`` per split, ``exact``) and the metric datasets and ``computed`` mask into the
    file in one atomic swap, then drop the journal."""

    def edit(f: h5py.File) -> None:
        shape = f["computed"].shape
        generation = hdf5.attr_to_python(f.attrs.get("generation"))
        state = read_estimate(path, f, shape, str(generation) if generation else None)
        write_state(f, state)
        for key, value in (attrs or {}).items():
            if value is not None:
                f.attrs[key] = python_to_attr(value)

    atomic_update(path, edit)
    journal_path(journal_stem(path)).unlink(missing_ok=True)


def write_state(f: h5py.File, state: SurfaceEstimate) -> None:
    sampled = state.sampled()
    for split, part in state.splits.items():
        key = f"{GROUP}/{split}"
        f[f"{key}/sums"][...] = part.sums
        _replace(f, f"{key}/n", state.grid(part.n()))
        for metric in ("loss", "acc"):
            value, se = state.value(split, metric)
            _replace(f, f"{key}/{metric}_se", state.grid(se))
            if f"{split}_{metric}" in f:
                f[f"{split}_{metric}"][...] = state.grid(np.where(sampled, value, np.nan))
    _replace(f, f"{GROUP}/exact", state.grid(state.exact()).astype(np.uint8))
    f["computed"][...] = state.grid(sampled).astype(np.uint8)


def _replace(f: h5py.File, key: str, data: np.ndarray) -> None:
    if key in f:
        del f[key]
    f.create_dataset(key, data=data)


def overlay(state: SurfaceEstimate, values: dict[str, np.ndarray], computed: np.ndarray) -> None:
    """Put the state's estimates into a read surface's arrays (in place): what the file would
    hold once its journal is folded."""
    sampled = state.grid(state.sampled())
    for split in state.splits:
        for metric in ("loss", "acc"):
            if f"{split}_{metric}" in values:
                est = state.grid(state.value(split, metric)[0])
                values[f"{split}_{metric}"][...] = np.where(sampled, est, np.nan)
    computed[...] = sampled


def stored_estimate(path: Path) -> EstimateSpec | None:
    """The EstimateSpec of the surface file at ``path`` (None: an exact surface)."""
    with hdf5.open_file(path, "r") as f:
        raw = f.attrs.get(ESTIMATE_ATTR)
        return stored_spec({ESTIMATE_ATTR: hdf5.attr_to_python(raw)} if raw is not None else {})


def estimate_summary(state: SurfaceEstimate) -> dict[str, Any]:
    """Per split, what an estimated surface rests on (JSON-ready: the CLI prints it, a
    service sends it): how many points are exact, the mean ``n`` of ``N``, and the widest
    stated loss interval (half-width at the stated level, relative to the value and
    absolute) among sampled points."""
    out: dict[str, Any] = {"target": state.spec.describe(), "method": state.spec.method}
    sampled = state.sampled()
    for split, part in state.splits.items():
        value, se = state.value(split, "loss")
        half = part.z * se
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.where(sampled, half / np.abs(value), np.nan)
        n = part.n()
        out[split] = {
            "exact": bool((n >= part.size).all()),
            "points_exact": int((n >= part.size).sum()),
            "points": int(n.size),
            "n_mean": float(n[sampled].mean()) if sampled.any() else 0.0,
            "N": part.size,
            "loss_halfwidth_max": float(np.nanmax(np.where(sampled, half, np.nan)))
            if sampled.any()
            else None,
            "loss_halfwidth_rel_max": float(np.nanmax(relative)) if sampled.any() else None,
            "z": part.z,
        }
    return out


def estimate_lines(state: SurfaceEstimate) -> list[str]:
    """``train: estimate ±4.2 %, n 1,024 of 50,000`` or ``train: exact``, one per split."""
    summary = estimate_summary(state)
    lines = []
    for split in state.splits:
        s = summary[split]
        if s["exact"]:
            lines.append(f"{split}: exact (every point read all {s['N']:,} samples)")
            continue
        if s["loss_halfwidth_rel_max"] is None:
            lines.append(f"{split}: estimate not started")
            continue
        width = (
            f"±{s['loss_halfwidth_rel_max'] * 100:.2g} %"
            if state.spec.relative
            else f"±{s['loss_halfwidth_max']:.2g}"
        )
        lines.append(
            f"{split}: estimate {width}, n {s['n_mean']:,.0f} of {s['N']:,} on average "
            f"(widest 95 % loss interval; {s['points_exact']} of {s['points']} points exact; "
            f"target {summary['target']}, {summary['method']})"
        )
    return lines
