"""Grid geometry: coordinates and the row-major flat indices shared by writer and readers.

Values are laid out ``(ny, nx)`` -- value ``[j, i]`` is at ``(x[i], y[j])``, the layout Plotly's
``surface`` expects -- or ``(nz, ny, nx)`` for a volume (``[k, j, i]`` at
``(x[i], y[j], z[k])``), and flat indices are row-major over that shape (x fastest).
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


def z_coordinates(grid: GridSpec) -> np.ndarray | None:
    """``z`` (nz,) of a volume, spaced like ``x`` and ``y``; None for a curve or a surface."""
    if grid.n_z is None or grid.z_range is None:
        return None
    return np.linspace(grid.z_range[0], grid.z_range[1], grid.n_z, dtype=np.float64)


def grid_shape(grid: GridSpec) -> tuple[int, ...]:
    """``(nz, ny, nx)`` for a volume, ``(ny, nx)`` for a surface, ``(nx,)`` for a curve."""
    if grid.n_y is None:
        return (grid.n_x,)
    return (grid.n_y, grid.n_x) if grid.n_z is None else (grid.n_z, grid.n_y, grid.n_x)


def flat_coordinates(
    x: np.ndarray, y: np.ndarray | None, flat_indices: np.ndarray, z: np.ndarray | None = None
) -> np.ndarray:
    """``(K, ndim)`` grid coordinates of row-major flat indices (x varies fastest)."""
    flat_indices = np.asarray(flat_indices, dtype=np.int64)
    if y is None:
        coords: np.ndarray = x[flat_indices][:, None]
        return coords
    rest, i = np.divmod(flat_indices, len(x))
    if z is None:
        return np.stack([x[i], y[rest]], axis=1)
    k, j = np.divmod(rest, len(y))
    return np.stack([x[i], y[j], z[k]], axis=1)
