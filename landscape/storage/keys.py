"""What identifies a surface: its cache key, and the spec as a file stores it.

The key is a digest of everything that changes the numbers -- the spec without where its inputs
live, the checkpoint's bytes (sha256) and the arithmetic precision -- so a moved checkpoint or
data folder finds the same surface, and two precisions never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from landscape.specs import DEFAULT_DIRECTION_STEPS, DataSpec, DirectionSpec, SurfaceSpec, to_dict

FORMAT_NAME = "landscape-surface"
FORMAT_VERSION = 3
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
# What the key hashes, not the file layout: version 3 only added volumes, so 1D and 2D
# surfaces keep the keys they had under version 2 and stay cached.
KEY_SCHEME = f"{FORMAT_NAME}/2"

# Written to every file's root since ``weight`` normalization became Li et al.'s elementwise
# ``d ⊙ θ``; a file without it that says ``weight`` was rescaled globally (now ``global``).
WEIGHT_RULE_ATTR = "weight_normalization"
WEIGHT_RULE = "elementwise"
LEGACY_WEIGHT_NOTE = (
    "written when normalization 'weight' meant one global rescale (‖d‖ = ‖θ‖ over the whole "
    "model): read as 'global'; 'weight' now means Li et al.'s elementwise d ⊙ θ"
)

# Spec fields that locate inputs without changing the numbers: left out of the key so the CLI
# and the API (different data roots, a download flag) find the same surface.
_KEY_IGNORED_DATA_FIELDS = ("data_root", "download")


def surface_key(spec: SurfaceSpec, checkpoint_sha256: str, precision: str = "fp32") -> str:
    """The surface id (first 20 hex digits of a sha256; docs/format.md, "Cache key")."""
    payload = _key_payload(spec)
    blob = json.dumps(
        {
            "format": KEY_SCHEME,
            "checkpoint_sha256": checkpoint_sha256,
            "precision": precision,
            "spec": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _key_payload(spec: SurfaceSpec) -> dict[str, Any]:
    payload = to_dict(spec)
    del payload["checkpoint"]
    for name in _KEY_IGNORED_DATA_FIELDS:
        payload["data"].pop(name, None)
    if payload["grid"]["n_z"] is None:  # not a volume: the key it had before volumes
        del payload["grid"]["n_z"], payload["grid"]["z_range"]
    directions = payload["directions"]
    if directions["max_lanczos_steps"] == DEFAULT_DIRECTION_STEPS:  # the key it had before
        del directions["max_lanczos_steps"]
    if directions["hessian_ends"] == "max":  # the top eigenvectors: the key it had before
        del directions["hessian_ends"]
    if directions["params"]:  # a subset: its patterns in any order select the same one
        directions["params"] = sorted(directions["params"])
    else:  # every parameter: the key it had before subsets
        del directions["params"]
    if directions["normalization"] == "weight":  # never the key of an old-meaning file
        directions["weight_rule"] = WEIGHT_RULE
    # Snapshots and the target enter by file name: their folder is where they live, not what
    # they hold (the checkpoint's sha256 already ties them to one training run).
    directions["trajectory"] = [Path(p).name for p in directions["trajectory"]]
    if directions["target_checkpoint"] is not None:
        directions["target_checkpoint"] = Path(directions["target_checkpoint"]).name
    if directions["through_checkpoints"]:  # three_point: the other two, by name
        directions["through_checkpoints"] = [
            Path(p).name for p in directions["through_checkpoints"]
        ]
    else:  # any other kind: the key it had before three_point
        del directions["through_checkpoints"]
    return payload


def read_as_written(spec: SurfaceSpec, attrs: Mapping[str, Any]) -> SurfaceSpec:
    """A stored spec in the meaning its file was written in: an old-meaning ``weight`` (no
    ``WEIGHT_RULE_ATTR``) is the ``global`` rescale, so a resume or a comparison sees it so."""
    if spec.directions.normalization == "weight" and WEIGHT_RULE_ATTR not in attrs:
        return replace(spec, directions=replace(spec.directions, normalization="global"))
    return spec


def spec_differences(a: SurfaceSpec, b: SurfaceSpec) -> list[str]:
    """Dotted names of the key-relevant spec fields that differ, for an actionable error."""

    def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flatten(_key_payload(a)), flatten(_key_payload(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


# --------------------------------------------------------------------------- stored paths


def _relative(value: str | None, folder: Path) -> str | None:
    if value is None:
        return None
    return os.path.relpath(os.path.abspath(value), os.path.abspath(folder))


def _absolute(value: str | None, folder: Path) -> str | None:
    if value is None or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(os.path.abspath(folder), value))


def portable_spec(spec: SurfaceSpec, folder: Path) -> SurfaceSpec:
    """The spec as a file stores it: every path relative to the file's folder, so a file names
    no absolute path of the machine that wrote it and still finds its inputs when moved along
    with them."""
    return _map_paths(spec, lambda p: _relative(p, folder))


def resolved_spec(spec: SurfaceSpec, folder: Path) -> SurfaceSpec:
    """The inverse of ``portable_spec``: relative paths joined to the file's folder."""
    return _map_paths(spec, lambda p: _absolute(p, folder))


def _map_paths(spec: SurfaceSpec, how: Any) -> SurfaceSpec:
    data: DataSpec = replace(spec.data, data_root=how(spec.data.data_root))
    directions: DirectionSpec = replace(
        spec.directions,
        target_checkpoint=how(spec.directions.target_checkpoint),
        trajectory=tuple(how(p) for p in spec.directions.trajectory),
        through_checkpoints=tuple(how(p) for p in spec.directions.through_checkpoints),
    )
    return replace(spec, checkpoint=how(spec.checkpoint), data=data, directions=directions)
