"""The page on a partial surface (coarse-to-fine preview) and on 3D volumes (isosurface, z
slider, linked sliders in the comparison).

The surfaces are real files written through ``landscape.storage`` and turned into the API's
JSON by ``api.views.surface_data`` (what ``GET /api/surfaces/{id}`` returns); the page gets
them by request interception, so no job has to compute them first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from api.db import SurfaceRecord
from api.views import surface_data
from landscape import storage as store
from landscape.specs import GridSpec, SurfaceSpec

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

SHA = "cd" * 32


def _bowl(coords: np.ndarray) -> np.ndarray:
    return 1.0 + (coords**2 * np.arange(1, coords.shape[1] + 1)).sum(axis=1)


def _surface_json(path: Path, grid: GridSpec, flat: np.ndarray, surface_id: str) -> str:
    spec = SurfaceSpec(checkpoint="ckpt.pt", grid=grid)
    x, y = store.grid_coordinates(grid)
    directions = [{"w": torch.ones(2)} for _ in range(grid.ndim)]
    store.create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance={"checkpoint_sha256": SHA}
    )
    coords = store.flat_coordinates(x, y, flat, store.z_coordinates(grid))
    values = _bowl(coords)
    store.write_points(path, flat, {"train_loss": values, "train_acc": 1 / values})
    record = SurfaceRecord(
        id=surface_id, label=surface_id, model="bowl", dataset="digits", checkpoint_id="c",
        request={},
    )  # fmt: skip
    return surface_data(record, store.read_surface(path)).model_dump_json()


def _serve(page: Any, server: str, surfaces: dict[str, str]) -> None:
    """Answer ``GET /api/surfaces/{id}`` for these ids; their other routes are 404."""

    def handle(route: Any) -> None:
        path = route.request.url.split("?")[0].removeprefix(f"{server}/api/surfaces/")
        if path in surfaces:
            route.fulfill(status=200, content_type="application/json", body=surfaces[path])
        else:
            route.fulfill(status=404, content_type="application/json", body='{"detail": "no"}')

    for surface_id in surfaces:
        page.route(f"{server}/api/surfaces/{surface_id}**", handle)


def test_a_partial_surface_is_drawn_whole_and_marked_as_a_preview(
    server: str, page: Any, tmp_path: Path
) -> None:
    grid = GridSpec(n_x=21, n_y=21)
    first = store.point_order(store.grid_shape(grid))[:44]  # ~10 %, in the engine's order
    body = _surface_json(tmp_path / "p.h5", grid, np.sort(first), "aa01")
    _serve(page, server, {"aa01": body})
    page.goto(f"{server}/#/surfaces/aa01")
    page.wait_for_function("() => document.querySelector('#plot')?.dataset.ready === 'true'")
    assert page.locator(".plot-note").inner_text() == "preview: 44 of 441 points, interpolated"
    assert page.locator("#plot").get_attribute("data-preview") == "true"
    z = page.evaluate("() => document.querySelector('#plot').data[0].z")
    assert len(z) == 21 and all(len(row) == 21 and None not in row for row in z)
    sent = json.loads(body)["values"]["train_loss"]
    for j, i in [(0, 0), (10, 10), (20, 20), (0, 20)]:  # computed points are drawn as they are
        assert sent[j][i] is not None and z[j][i] == pytest.approx(sent[j][i])


def _volume_bodies(tmp_path: Path) -> dict[str, str]:
    grid = GridSpec(n_x=11, n_y=11, z_range=(-1.0, 1.0), n_z=11)
    flat = np.arange(grid.n_points)
    return {sid: _surface_json(tmp_path / f"{sid}.h5", grid, flat, sid) for sid in ("bb01", "bb02")}


def _slice_z(page: Any, root: str = "") -> Any:
    return page.evaluate(
        "(root) => document.querySelector(`${root} [data-role=slice]`).data[0].z", root
    )


def _move_slider(page: Any, selector: str, k: int) -> None:
    page.locator(selector).evaluate(
        "(el, k) => { el.value = String(k); el.dispatchEvent(new Event('input')); }", k
    )


def test_a_volume_shows_an_isosurface_and_a_slider_through_its_z_slices(
    server: str, page: Any, tmp_path: Path
) -> None:
    bodies = _volume_bodies(tmp_path)
    _serve(page, server, bodies)
    page.goto(f"{server}/#/surfaces/bb01")
    page.wait_for_function(
        "() => document.querySelector('[data-role=slice]')?.dataset.ready === 'true'"
    )
    assert page.evaluate("() => document.querySelector('[data-role=isosurface]').data[0].type") == (
        "isosurface"
    )
    values = json.loads(bodies["bb01"])["values"]["train_loss"]
    assert page.locator(".volume-slider").input_value() == "5"  # the slice through θ (z = 0)
    np.testing.assert_allclose(_slice_z(page), values[5])
    _move_slider(page, ".volume-slider", 9)
    page.wait_for_function(
        "() => document.querySelector('[data-role=slice]').dataset.slice === '9'"
    )
    np.testing.assert_allclose(_slice_z(page), values[9])
    assert values[9] != values[5]
    assert "z = 0.800 (slice 10 of 11)" in page.locator(".volume-where").inner_text()


def test_compared_volumes_share_one_slider(server: str, page: Any, tmp_path: Path) -> None:
    _serve(page, server, _volume_bodies(tmp_path))
    page.goto(f"{server}/#/compare/bb01,bb02")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-role=slice]')]"
        ".filter((d) => d.dataset.ready === 'true').length === 2"
    )
    _move_slider(page, ".volume >> nth=0 >> .volume-slider", 2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-role=slice]')]"
        ".every((d) => d.dataset.slice === '2')"
    )
    assert page.locator(".volume-slider").evaluate_all("els => els.map(e => e.value)") == [
        "2",
        "2",
    ]
