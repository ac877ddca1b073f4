"""The linear path between two checkpoints as a file: a 1D surface plus its ``interpolation/``
group (docs/format.md, "Interpolation").

The 1D surface (direction kind ``interpolate``, ``x`` = ``t``) is what every reader of surface
files already draws; the group says how the path was evaluated and holds the barriers. Its
key hashes the surface key with the second checkpoint's digest and the settings that change
the numbers (BN mode and subset, alignment), so it is never taken for a plain interpolate
surface, whose BN statistics are θ₁'s at every point.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from landscape.errors import SurfaceFileError
from landscape.specs import SurfaceSpec
from landscape.storage.hdf5 import attr_to_python, open_file
from landscape.storage.keys import surface_key
from landscape.storage.surface_file import create_surface_file, read_surface
from landscape.storage.writer import mark_complete, write_group, write_points

GROUP = "interpolation"
ENCODING_TYPE = "linear-interpolation"
ENCODING_VERSION = "1"
UNALIGNED = "unaligned_"  # prefix of the line before alignment's metrics in the group


def interpolation_key(
    spec: SurfaceSpec, sha_a: str, sha_b: str, precision: str, settings: Mapping[str, Any]
) -> str:
    """First 20 hex digits of the sha256 of the surface key, θ₂'s digest and ``settings``."""
    blob = json.dumps(
        {
            "format": f"{ENCODING_TYPE}/{ENCODING_VERSION}",
            "surface_key": surface_key(spec, sha_a, precision),
            "target_checkpoint_sha256": sha_b,
            "settings": dict(settings),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stored_state(path: str | Path) -> tuple[str, str]:
    """``(key, status)`` of an existing file, without reading its arrays."""
    path = Path(path)
    with open_file(path, "r") as f:
        return str(attr_to_python(f.attrs.get("key", ""))), str(
            attr_to_python(f.attrs.get("status", "partial"))
        )


def write_interpolation(
    out: str | Path,
    spec: SurfaceSpec,
    *,
    t: np.ndarray,
    values: Mapping[str, np.ndarray],
    direction: Mapping[str, Tensor],
    barriers: Mapping[str, Mapping[str, float]],
    provenance: Mapping[str, Any],
    settings: Mapping[str, Any],
    metrics: Mapping[str, float],
    final: Mapping[str, Any],
    unaligned: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a finished path: the surface, every point, the group, then ``complete``.

    ``barriers`` maps ``""`` (the path stored as the surface) and, when aligned,
    ``"unaligned_"`` to each metric's barrier; ``settings`` become the group's attrs and
    ``metrics`` the ``metrics/`` group, ``final`` the root attrs set on completion (wall
    time, engine, device, dtype)."""
    out = Path(out)
    create_surface_file(out, spec, x=t, y=None, directions=[direction], provenance=provenance)
    write_points(out, np.arange(len(t), dtype=np.int64), values)
    arrays = {"t": np.asarray(t, dtype=np.float64)}
    for metric, array in (unaligned or {}).items():
        arrays[UNALIGNED + metric] = np.asarray(array, dtype=np.float64)
    attrs: dict[str, Any] = {
        "encoding-type": ENCODING_TYPE,
        "encoding-version": ENCODING_VERSION,
        **settings,
        "barriers": dict(barriers.get("", {})),
        "unaligned_barriers": dict(barriers[UNALIGNED]) if UNALIGNED in barriers else None,
    }
    write_group(out, GROUP, arrays, attrs)
    mark_complete(out, metrics=metrics, attrs=final)
    return out


@dataclass(frozen=True)
class Interpolation:
    """A path read back: ``t``, the values along it, its barriers and how it was computed."""

    t: np.ndarray
    values: dict[str, np.ndarray]
    barriers: dict[str, float]
    settings: dict[str, Any]  # the group's attrs: bn, alignment, digests, …
    unaligned: dict[str, np.ndarray] | None = None
    unaligned_barriers: dict[str, float] | None = None


def read_interpolation(path: str | Path) -> Interpolation:
    """The path stored in ``path``; a clear error for a surface file that holds none."""
    path = Path(path)
    surface = read_surface(path)
    if GROUP not in surface.groups:
        raise SurfaceFileError(f"{path.name!r} holds no linear interpolation (no {GROUP}/ group)")
    arrays, attrs = surface.groups[GROUP]
    unaligned = {
        k[len(UNALIGNED) :]: np.asarray(v, dtype=np.float64)
        for k, v in arrays.items()
        if k.startswith(UNALIGNED)
    }
    settings = {
        k: v
        for k, v in attrs.items()
        if k not in ("barriers", "unaligned_barriers") and not k.startswith("encoding-")
    }
    raw_unaligned = attrs.get("unaligned_barriers")
    return Interpolation(
        t=np.asarray(arrays["t"], dtype=np.float64),
        values=dict(surface.values),
        barriers={k: float(v) for k, v in dict(attrs.get("barriers", {})).items()},
        settings=settings,
        unaligned=unaligned or None,
        unaligned_barriers={k: float(v) for k, v in raw_unaligned.items()}
        if isinstance(raw_unaligned, dict)
        else None,
    )
