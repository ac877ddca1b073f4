"""MNIST-1D (Greydanus & Kobak, ICML 2024), generated here by the ``mnist1d`` package.

A real published benchmark that needs no download: ten 1-D digit templates, padded, scaled,
translated, sheared and noised into signals of 40 positions. The package's generator is seeded,
so the same size and seed give the same arrays everywhere; its ``get_dataset`` (which fetches
a pickle from the internet) is never used. Generating 60,000 samples takes tens of seconds, so
with a data root the arrays are cached in ``<data_root>/mnist1d/mnist1d-<n>-<seed>.npz``
(written atomically, checked against the generator's arguments on every read).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SEED = 42  # the package's own default seed
LENGTH = 40  # the package's final_seq_length
NUM_CLASSES = 10
CACHE_FOLDER = "mnist1d"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Variant:
    """One registered size: ``samples`` in all, the last ``test_samples`` of them the test split."""

    description: str
    samples: int
    test_samples: int


VARIANTS: dict[str, Variant] = {
    # Large enough to measure subsampled estimates on (MNIST's 60k, split 50k/10k).
    "mnist1d": Variant(
        "MNIST-1D: 60k signals of length 40 (50k/10k), 10 classes, generated locally",
        60_000, 10_000,
    ),
    # The package's default size and 80/20 split: the benchmark as published, and fast.
    "mnist1d-small": Variant(
        "MNIST-1D at its published size: 5,000 signals of length 40 (4k/1k), generated locally",
        5_000, 1_000,
    ),
}  # fmt: skip


def generator_args(variant: Variant) -> dict[str, Any]:
    """The package's default arguments at this size, the split left to ``_split``."""
    from mnist1d.data import get_dataset_args

    args: dict[str, Any] = get_dataset_args(as_dict=True)
    args.pop("url")  # only get_dataset's download reads it
    args.update(num_samples=variant.samples, train_split=1.0, seed=SEED)
    return args


def mnist1d_arrays(name: str, data_root: str | Path | None) -> dict[str, np.ndarray]:
    """``x_train`` (N, 1, 40) float32, ``y_train`` int64, and the test pair, of a variant:
    read from the cache under ``data_root``, else generated (and cached when there is a root)."""
    variant = VARIANTS[name]
    if data_root is None:
        logger.info("generating %s in memory; a data root would cache it on disk", name)
        return _generated(variant)
    path = cache_path(Path(data_root), variant)
    arrays = _read_cache(path, variant)
    if arrays is None:
        arrays = _generated(variant)
        _write_cache(path, arrays, variant)
    return arrays


def cache_path(root: Path, variant: Variant) -> Path:
    return root / CACHE_FOLDER / f"mnist1d-{variant.samples}-{SEED}.npz"


def _provenance(variant: Variant) -> str:
    """What made the arrays: a cached file made by other arguments or code is regenerated."""
    record = {
        "package": importlib.metadata.version("mnist1d"),
        "args": generator_args(variant),
        "test_samples": variant.test_samples,
    }
    return json.dumps(record, sort_keys=True)


@functools.lru_cache(maxsize=2)  # both splits of a run come from one generation
def _generated(variant: Variant) -> dict[str, np.ndarray]:
    logger.info("generating %s samples of MNIST-1D (seed %d)", variant.samples, SEED)
    dataset = _make_dataset(generator_args(variant))
    x = np.asarray(dataset["x"], dtype=np.float32)[:, None, :]  # (N, 1, 40)
    y = np.asarray(dataset["y"], dtype=np.int64)
    cut = variant.samples - variant.test_samples
    arrays: dict[str, np.ndarray] = {
        "x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:],
    }  # fmt: skip
    for array in arrays.values():
        array.flags.writeable = False  # shared by every caller of the cache
    return arrays


def _make_dataset(args: dict[str, Any]) -> dict[str, Any]:
    """The package's generator, leaving the global RNGs it reseeds as they were."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        result: dict[str, Any] = make_dataset(ObjectView(dict(args)))
        return result
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _read_cache(path: Path, variant: Variant) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["provenance"]) != _provenance(variant):
                logger.info("%s was made by other generator arguments: regenerating", path)
                return None
            arrays = {key: archive[key] for key in _KEYS}
    except (OSError, ValueError, KeyError) as exc:  # truncated or foreign: make it again
        logger.warning("unreadable MNIST-1D cache %s (%s): regenerating", path, exc)
        return None
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray], variant: Variant) -> None:
    """Write to a temporary file beside ``path`` and rename: a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "xb") as out:  # the umask's permissions, unlike mkstemp's 0600
                np.savez(out, provenance=np.array(_provenance(variant)), **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only data root: still usable, just not cached
        logger.warning("could not cache MNIST-1D in %s: %s", path, exc)
