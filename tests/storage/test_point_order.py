"""Coarse-to-fine point order: the ordering itself, and a real run stopped after ~10 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landscape import storage as store
from landscape.errors import CancelledError
from landscape.specs import DataSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.surface import Progress, compute_surface
from tests.cli_support import tiny_mlp_checkpoint

FAST = EngineOptions(device="cpu", workers=1, compile=False)


def _longest_gap(mask: np.ndarray, axis: int) -> int:
    """Most consecutive rows (axis 0) or columns (axis 1) that hold no computed point."""
    has_point = mask.any(axis=1 - axis)
    longest = run = 0
    for filled in has_point:
        run = 0 if filled else run + 1
        longest = max(longest, run)
    return longest


def _check_early_shape(mask: np.ndarray) -> None:
    ny, nx = mask.shape
    corners = [(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1)]
    for j, i in [*corners, ((ny - 1) // 2, (nx - 1) // 2)]:
        assert mask[j, i], f"corner or centre ({j}, {i}) not computed"
    assert _longest_gap(mask, 0) <= 4 and _longest_gap(mask, 1) <= 4, mask.astype(int)


@pytest.mark.parametrize("shape", [(21, 21), (11, 11, 11), (7, 20), (1,), (2,), (4, 3), (30,)])
def test_the_order_visits_every_point_once(shape: tuple[int, ...]) -> None:
    order = store.point_order(shape)
    assert sorted(order.tolist()) == list(range(int(np.prod(shape))))


def test_the_first_tenth_of_a_21_by_21_grid_spans_it() -> None:
    order = store.point_order((21, 21))
    mask = np.zeros(441, dtype=bool)
    mask[order[:44]] = True
    _check_early_shape(mask.reshape(21, 21))
    # The row-major order it replaces would fail: its first 10 % is two rows.
    row_major = np.zeros(441, dtype=bool)
    row_major[:44] = True
    assert _longest_gap(row_major.reshape(21, 21), 0) > 4


def test_the_first_points_are_the_corners_centre_and_edge_midpoints() -> None:
    first = store.point_order((21, 21))[:9]
    rows, cols = np.divmod(first, 21)
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {
        (j, i) for j in (0, 10, 20) for i in (0, 10, 20)
    }
    assert first[0] == 10 * 21 + 10  # the centre: the checkpoint itself


def test_a_volume_is_refined_in_every_slice_direction() -> None:
    order = store.point_order((11, 11, 11))
    mask = np.zeros(11**3, dtype=bool)
    mask[order[: 11**3 // 10]] = True
    cube = mask.reshape(11, 11, 11)
    for axis in range(3):
        _check_early_shape(cube.any(axis=axis))


def test_a_resume_keeps_the_order_of_the_points_it_still_needs() -> None:
    order = store.point_order((9, 6))
    missing = np.sort(order[::3])  # ascending, as Surface.missing() returns them
    np.testing.assert_array_equal(store.in_point_order(missing, (9, 6)), order[::3])


@pytest.mark.slow
def test_a_run_stopped_after_a_tenth_shows_the_whole_surface_and_resumes(
    tmp_path: Path,
) -> None:
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    spec = SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(train_size=32),
        grid=GridSpec(x_range=(-1.0, 1.0), n_x=21, y_range=(-1.0, 1.0), n_y=21),
    )
    out = tmp_path / "s.h5"
    seen: list[int] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress.done)

    with pytest.raises(CancelledError):
        compute_surface(
            spec, out, options=FAST, on_progress=on_progress, should_stop=lambda: seen[-1] >= 44
        )
    partial = store.read_surface(out)
    assert partial.status == "partial" and 44 <= partial.done <= 0.2 * partial.total
    _check_early_shape(partial.computed)

    compute_surface(spec, out, options=FAST)
    whole = store.read_surface(compute_surface(spec, tmp_path / "whole.h5", options=FAST))
    resumed = store.read_surface(out)
    assert resumed.status == "complete"
    for metric in spec.metric_names:
        np.testing.assert_allclose(resumed.values[metric], whole.values[metric], rtol=1e-6)
