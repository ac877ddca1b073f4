"""The one seeded permutation of each split and the prefix lengths that read it (common random
numbers: every grid point sees the same samples, so differences between points are far less
noisy than the points themselves)."""

from __future__ import annotations

import numpy as np

LADDER_STEP = 2.0**0.25  # prefix lengths a point may stand at: first·2^(k/4), then N


def split_permutation(strata: np.ndarray, seed: int, split: str) -> np.ndarray:
    """``(N,)`` int64: the order the split's samples are read in, stratified: each stratum's
    samples in a seeded random order, interleaved so that every prefix holds each stratum in
    proportion (within a sample or two). Seeded per split name, so two splits of one size are
    not read in the same order."""
    strata = np.asarray(strata, dtype=np.int64)
    salt = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.Generator(np.random.PCG64([seed, salt]))
    key = np.empty(len(strata))
    for h in np.unique(strata):
        members = np.flatnonzero(strata == h)
        members = members[rng.permutation(len(members))]
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(key, kind="stable").astype(np.int64)


def ladder(n: int, first: int) -> np.ndarray:
    """Prefix lengths ``⌈first·2^(k/4)⌉`` below ``n``, then ``n``: where a point's next look
    is rounded up to, so points at similar needs share a slice (and the device's K points per
    call)."""
    sizes: list[int] = []
    k = 0
    while (size := int(np.ceil(first * LADDER_STEP**k - 1e-9))) < n:
        if not sizes or size > sizes[-1]:
            sizes.append(size)
        k += 1
    sizes.append(n)
    return np.asarray(sizes, dtype=np.int64)


def round_up(want: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The smallest ladder size at or above each of ``want`` (the last, N, above them all)."""
    index = np.searchsorted(sizes, np.ceil(want - 1e-9), side="left")
    out: np.ndarray = sizes[np.minimum(index, len(sizes) - 1)]
    return out
