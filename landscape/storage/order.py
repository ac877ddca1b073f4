"""The order grid points are computed in: coarse to fine, so a surface's shape appears early.

A row-major sweep shows the first rows in full and nothing of the rest until the end. Instead
each axis is refined by bisection -- level 0 is its two ends and its middle, each next level
adds the midpoints of the gaps left -- and a point's level is the finest of its axes' levels.
Points are computed level by level: first the corners, the centre and the edges' midpoints
(3 per axis), then the nested 5, 9, 17, ... per axis, then the rest. On 21×21, after
25 points (6 %) every 5th row and column holds points, so the page can draw the whole surface
interpolated long before it is finished.

The order is only a schedule: a point's value does not depend on when it is computed, the
file's layout and flat indices are unchanged, and a resume computes the missing points in
the same order.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def axis_levels(n: int) -> np.ndarray:
    """``(n,)`` level of each index of an axis of ``n`` points: 0 for the ends and the middle,
    ``ℓ + 1`` for the midpoints of the gaps between points of level ``≤ ℓ``."""
    levels = np.full(n, -1, dtype=np.int64)
    seeds = sorted({0, (n - 1) // 2, n - 1})
    levels[seeds] = 0
    known, level = seeds, 0
    while (levels < 0).any():
        level += 1
        new = [(a + b) // 2 for a, b in pairwise(known) if b - a > 1]
        levels[new] = level
        known = sorted(known + new)
    return levels


def point_order(shape: tuple[int, ...]) -> np.ndarray:
    """Every flat index (row-major over ``shape``, as the file's) once, coarse to fine.

    Sorted by the point's level (the finest of its axes'), then by the sum of its axes' levels
    (a new level first fills in the lines of the coarser ones), then by distance from the
    centre, then by flat index, so the order is deterministic.
    """
    per_axis = [axis_levels(n) for n in shape]
    grids = np.meshgrid(*per_axis, indexing="ij")
    level = np.maximum.reduce(grids).ravel() if grids else np.zeros(1, np.int64)
    level_sum = np.add.reduce(grids).ravel()
    index = np.indices(shape).reshape(len(shape), -1)
    centre = np.array([(n - 1) / 2 for n in shape])[:, None]
    span = np.array([max(n - 1, 1) for n in shape])[:, None]
    distance = (((index - centre) / span) ** 2).sum(axis=0)
    flat = np.arange(int(np.prod(shape)), dtype=np.int64)
    order: np.ndarray = np.lexsort((flat, distance, level_sum, level))
    return order.astype(np.int64)


def in_point_order(flat_indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``flat_indices`` (e.g. the missing points of a resume) in coarse-to-fine order."""
    rank = np.empty(int(np.prod(shape)), dtype=np.int64)
    rank[point_order(shape)] = np.arange(rank.size)
    flat_indices = np.asarray(flat_indices, dtype=np.int64)
    ordered: np.ndarray = flat_indices[np.argsort(rank[flat_indices], kind="stable")]
    return ordered
