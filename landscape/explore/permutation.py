"""The one seeded permutation of each split and the stages that read it (common random numbers:
every grid point sees the same samples, so differences between points are far less noisy than
the points themselves)."""

from __future__ import annotations

import numpy as np


def split_permutation(n: int, seed: int, split: str) -> np.ndarray:
    """``(n,)`` int64: the order the split's samples are read in. Seeded per split name, so two
    splits of one size are not read in the same order."""
    salt = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.Generator(np.random.PCG64([seed, salt]))
    return rng.permutation(n).astype(np.int64)


def stage_sizes(n: int, first: int) -> np.ndarray:
    """Prefix lengths ``first·2^k`` below ``n``, then ``n``: every look a point may stop at."""
    sizes = []
    size = first
    while size < n:
        sizes.append(size)
        size *= 2
    sizes.append(n)
    return np.asarray(sizes, dtype=np.int64)


def next_size(current: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The stage after each prefix length in ``current`` (0 → the first stage; ``n`` stays)."""
    index = np.searchsorted(sizes, current, side="right")
    out: np.ndarray = sizes[np.minimum(index, len(sizes) - 1)]
    return out
