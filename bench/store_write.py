"""What one finished chunk costs to store: the journal append vs swapping in a whole copy.

    python -m bench.store_write                  # ResNet-110 (CIFAR), 51×51 grid
    python -m bench.store_write --model resnet20 --grid 21

Both ways are timed in one run on the same file (the model's two directions stored in it, as a
surface file holds them), the same chunks (the engine's chunk size for the grid) and the same
disk. "copy" is what storing a chunk cost before the journal: copy the file, write the values,
``os.replace`` it in. "journal" is ``SurfaceWriter.append`` (an fsynced append of the chunk),
plus the one fold into the file at the end, reported separately.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from landscape import storage
from landscape.models import build
from landscape.specs import DataSpec, GridSpec, SurfaceSpec
from landscape.storage.hdf5 import atomic_update
from landscape.surface import MAX_CHUNK_POINTS, TARGET_CHUNKS, plan_chunks


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _new_file(folder: Path, name: str, model: torch.nn.Module, grid: GridSpec) -> Path:
    spec = SurfaceSpec(checkpoint="model.pt", data=DataSpec(name="cifar10"), grid=grid)
    directions = [
        {k: torch.randn_like(v, dtype=torch.float32) for k, v in model.state_dict().items()}
        for _ in range(2)
    ]
    x, y = storage.grid_coordinates(grid)
    return storage.create_surface_file(
        folder / name, spec, x=x, y=y, directions=directions,
        provenance={"checkpoint_sha256": "0" * 64},
    )  # fmt: skip


def _copy_write(path: Path, indices: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """The former way: every chunk edits a copy of the whole file and swaps it in."""

    def edit(f: h5py.File) -> None:
        for metric, new in values.items():
            current = f[metric][()]
            current.reshape(-1)[indices] = new
            f[metric][...] = current
        mask = f["computed"][()]
        mask.reshape(-1)[indices] = 1
        f["computed"][...] = mask

    atomic_update(path, edit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet110")
    parser.add_argument("--grid", type=int, default=51)
    args = parser.parse_args()

    model = build(args.model, in_channels=3, num_classes=10, image_size=32)
    n_params = sum(p.numel() for p in model.state_dict().values())
    grid = GridSpec(n_x=args.grid, n_y=args.grid)
    n = grid.n_points
    chunk = min(math.ceil(n / TARGET_CHUNKS), MAX_CHUNK_POINTS)
    chunks = plan_chunks(np.arange(n), chunk)
    rng = np.random.default_rng(0)
    payload = [{m: rng.random(len(c)) for m in ("train_loss", "train_acc")} for c in chunks]

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = Path(tmp)
        old = _new_file(folder, "copy.h5", model, grid)
        size_mb = old.stat().st_size / 1e6
        start = time.perf_counter()
        for indices, values in zip(chunks, payload, strict=True):
            _copy_write(old, indices, values)
        copy_s = time.perf_counter() - start

        new = _new_file(folder, "journal.h5", model, grid)
        writer = storage.SurfaceWriter(new)
        start = time.perf_counter()
        for indices, values in zip(chunks, payload, strict=True):
            writer.append(indices, values)
        journal_s = time.perf_counter() - start
        start = time.perf_counter()
        writer.close()
        fold_s = time.perf_counter() - start
        a, b = storage.read_surface(old), storage.read_surface(new)
        assert np.array_equal(a.values["train_loss"], b.values["train_loss"])
        assert a.done == b.done == n

    k = len(chunks)
    print(f"{args.model} ({n_params / 1e6:.2f} M parameters), {args.grid}×{args.grid} grid, "
          f"{k} chunks of ≤ {chunk} points, file {size_mb:.1f} MB; CPU: {_cpu()}")  # fmt: skip
    print(f"{'per chunk':<12} {'copy (before)':>14} {'journal (after)':>16} {'ratio':>7}")
    print(f"{'':<12} {1e3 * copy_s / k:>11.1f} ms {1e3 * journal_s / k:>13.2f} ms "
          f"{copy_s / journal_s:>6.0f}×")  # fmt: skip
    print(f"whole surface: copy {copy_s:.2f} s; journal {journal_s:.3f} s + one fold "
          f"{fold_s:.2f} s at the end")  # fmt: skip


if __name__ == "__main__":
    main()
