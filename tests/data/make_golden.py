"""Regenerate ``golden-surface-v2.h5``: a tiny complete surface in format landscape-surface/2.

The files are committed so that later versions of landscape are tested against surfaces written
by this one (old files must keep loading). Only rerun this when the format version changes --
and then keep the old golden file next to the new one (``golden-surface-v1.h5`` was written by
landscape 0.1 with the same ``SPEC`` and values).

    .venv/bin/python tests/data/make_golden.py
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from landscape import storage as store
from landscape.analysis.surface_metrics import surface_metrics
from landscape.specs import DataSpec, GridSpec, SurfaceSpec

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden-surface-v2.h5"

SPEC = SurfaceSpec(
    checkpoint="golden.pt",
    data=DataSpec(name="digits", train_size=8),
    grid=GridSpec(x_range=(-1.0, 1.0), n_x=4, y_range=(-0.5, 0.5), n_y=3),
    splits=("train",),
)
CHECKPOINT_SHA256 = "0" * 64
DIVERGED = 11  # flat index of the one point stored as computed-but-NaN in the v2 file


def golden_loss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Asymmetric in x and y, so a transposed grid cannot pass the test."""
    return 1.0 + x**2 + 2.0 * y**2 + 0.25 * x


def golden_acc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 0.5 + 0.1 * x - 0.2 * y


def golden_directions() -> list[dict[str, torch.Tensor]]:
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10
    return [
        {"fc.weight": weight, "fc.bias": torch.zeros(2)},
        {"fc.weight": -weight, "fc.bias": torch.zeros(2)},
    ]


def make(path: Path = GOLDEN) -> Path:
    x, y = store.grid_coordinates(SPEC.grid)
    provenance = {
        "model": "golden-linear",
        "model_args": {"in_features": 3, "num_classes": 2},
        "checkpoint_sha256": CHECKPOINT_SHA256,
        "dataset": "digits",
        "seed": 0,
        "normalization": "filter",
        "ignore": "biasbn",
        "device": "cpu",
        "dtype": "float32",
        "versions": {"landscape": "0.1.0"},
        "wall_time_s": 0.0,
    }
    if path.exists():
        path.unlink()
    spec = replace(SPEC, checkpoint=str(path.parent / SPEC.checkpoint))  # stored relative
    store.create_surface_file(
        path, spec, x=x, y=y, directions=golden_directions(), provenance=provenance
    )
    flat = np.arange(SPEC.grid.n_points)
    coords = store.flat_coordinates(x, y, flat)
    values = {
        "train_loss": golden_loss(coords[:, 0], coords[:, 1]),
        "train_acc": golden_acc(coords[:, 0], coords[:, 1]),
    }
    values["train_loss"][DIVERGED] = np.nan
    store.write_points(path, flat, values)
    surface = store.read_surface(path)
    store.mark_complete(path, metrics=surface_metrics(x, y, surface.values, SPEC.metric_names))
    return path


if __name__ == "__main__":
    make()
