"""Regenerate ``golden-surface-v1.h5``: a tiny complete surface in format landscape-surface/1.

The file is committed so that later versions of landscape are tested against surfaces written
by this one (old files must keep loading). Only rerun this when the format version changes --
and then keep the old golden file next to the new one.

    .venv/bin/python tests/data/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landscape import store
from landscape.specs import DataSpec, GridSpec, SurfaceSpec
from landscape.surface import surface_metrics

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden-surface-v1.h5"

SPEC = SurfaceSpec(
    checkpoint="golden.pt",
    data=DataSpec(name="digits", train_size=8),
    grid=GridSpec(x_range=(-1.0, 1.0), n_x=4, y_range=(-0.5, 0.5), n_y=3),
    splits=("train",),
)
CHECKPOINT_SHA256 = "0" * 64


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
    store.create_surface_file(
        path, SPEC, x=x, y=y, directions=golden_directions(), provenance=provenance
    )
    flat = np.arange(SPEC.grid.n_points)
    coords = store.flat_coordinates(x, y, flat)
    values = {
        "train_loss": golden_loss(coords[:, 0], coords[:, 1]),
        "train_acc": golden_acc(coords[:, 0], coords[:, 1]),
    }
    store.write_points(path, flat, values)
    surface = store.read_surface(path)
    store.mark_complete(path, metrics=surface_metrics(x, y, surface.values, SPEC.metric_names))
    return path


if __name__ == "__main__":
    make()
