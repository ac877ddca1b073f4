"""Grid geometry: coordinates and the row-major flat indices shared by writer and readers.

Values are laid out ``(ny, nx)`` -- value ``[j, i]`` is at ``(x[i], y[j])``, the layout Plotly's
``surface`` expects -- and flat indices are row-major over that shape (x fastest).
"""

from __future__ import annotations

import numpy as np

from landscape.specs import GridSpec


def grid_coordinates(grid: GridSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (nx,) and ``y`` (ny,) or None: evenly spaced, both ends included (float64)."""
    x = np.linspace(grid.x_range[0], grid.x_range[1], grid.n_x, dtype=np.float64)
    if grid.n_y is None or grid.y_range is None:
        return x, None
    return x, np.linspace(grid.y_range[0], grid.y_range[1], grid.n_y, dtype=np.float64)


def grid_shape(grid: GridSpec) -> tuple[int, ...]:
    """``(ny, nx)`` for a surface, ``(nx,)`` for a curve."""
    return (grid.n_x,) if grid.n_y is None else (grid.n_y, grid.n_x)


def flat_coordinates(x: np.ndarray, y: np.ndarray | None, flat_indices: np.ndarray) -> np.ndarray:
    """``(K, ndim)`` grid coordinates of row-major flat indices (x varies fastest)."""
    flat_indices = np.asarray(flat_indices, dtype=np.int64)
    if y is None:
        coords: np.ndarray = x[flat_indices][:, None]
        return coords
    j, i = np.divmod(flat_indices, len(x))
    return np.stack([x[i], y[j]], axis=1)
