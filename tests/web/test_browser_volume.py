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


def _partial_body(tmp_path: Path, count: int, surface_id: str) -> str:
    """A 21×21 bowl with its first `count` points computed, in the engine's order."""
    grid = GridSpec(n_x=21, n_y=21)
    first = store.point_order(store.grid_shape(grid))[:count]
    return _surface_json(tmp_path / f"{surface_id}.h5", grid, np.sort(first), surface_id)


def _unimodal(line: list[float]) -> bool:
    """Down to one lowest point, then up: what every row and column of a bowl does."""
    low = line.index(min(line))
    steps = np.diff(line)
    return bool((steps[:low] <= 1e-12).all() and (steps[low:] >= -1e-12).all())


def test_a_partial_surface_is_drawn_whole_and_marked_as_a_preview(
    server: str, page: Any, tmp_path: Path
) -> None:
    body = _partial_body(tmp_path, 44, "aa01")  # ~10 %
    _serve(page, server, {"aa01": body})
    page.goto(f"{server}/#/surfaces/aa01")
    page.wait_for_function("() => document.querySelector('#plot')?.dataset.ready === 'true'")
    flag = page.locator(".preview-flag").inner_text()
    assert flag.startswith("Interpolated preview, 44 of 441 points"), flag
    assert page.locator("#plot").get_attribute("data-preview") == "lattice"
    z = page.evaluate("() => document.querySelector('#plot').data[0].z")
    assert len(z) == 21 and all(len(row) == 21 and None not in row for row in z)
    sent = json.loads(body)["values"]["train_loss"]
    for j, i in [(0, 0), (10, 10), (20, 20), (0, 20)]:  # computed points are drawn as they are
        assert sent[j][i] is not None and z[j][i] == pytest.approx(sent[j][i])


def _is_bowl(surface: list[list[float]]) -> bool:
    rows_ok = all(_unimodal(row) for row in surface)
    return rows_ok and all(_unimodal([row[i] for row in surface]) for i in range(len(surface[0])))


def test_early_previews_invent_no_walls_and_say_so_above_the_plot(
    server: str, page: Any, tmp_path: Path
) -> None:
    """At 3, 6, 8 and 10 % of a bowl's points the preview is a bowl (every row and column
    falls to one lowest point and rises again: no wall, trench or terrace; filling each row
    through its own points drew walls at 3, 8 and 10 %); drawn, the other computed points are
    dots at their true values and "Interpolated preview" is on screen above the plot; with 5
    points (1 %) only the points are drawn."""
    counts = {"ab03": 13, "ab06": 26, "ab08": 35, "ab10": 44, "ab01": 5}
    bodies = {sid: _partial_body(tmp_path, n, sid) for sid, n in counts.items()}
    _serve(page, server, bodies)
    for sid in ("ab08", "ab01"):  # drawn: 3D in software WebGL takes seconds, so two of them
        count = counts[sid]
        page.goto(f"{server}/#/surfaces/{sid}")
        page.wait_for_function(
            "(id) => { const d = document.querySelector(`#plot[data-surface-id='${id}']`);"
            " return d?.dataset.ready === 'true' && d.data?.length; }",
            arg=sid,
        )
        traces = page.evaluate(
            "() => document.querySelector('#plot').data.map(t => ({type: t.type, z: t.z,"
            " x: t.x, y: t.y, n: t.x.length}))"
        )
        sent = json.loads(bodies[sid])["values"]["train_loss"]
        if sid == "ab08":
            assert traces[0]["type"] == "surface" and _is_bowl(traces[0]["z"]), "walls"
        flag = page.locator(".preview-flag")
        box, plot = flag.bounding_box(), page.locator("#plot").bounding_box()
        assert box["y"] + box["height"] <= min(plot["y"] + 1, 900), (box, plot)  # on screen
        if sid == "ab01":
            assert [t["type"] for t in traces] == ["scatter3d"] and traces[0]["n"] == count
            assert flag.inner_text().startswith("Preview, 5 of 441 points: drawn as points")
            continue
        assert flag.inner_text().startswith("Interpolated preview, 35 of 441 points")
        surface, dots = traces[0]["z"], traces[1]
        computed = {(j, i) for j, row in enumerate(sent) for i, v in enumerate(row) if v}
        exact = {(j, i) for j, i in computed if surface[j][i] == pytest.approx(sent[j][i])}
        assert len(exact) == 25 and dots["n"] == count - 25  # the 5×5 lattice, 10 dots
        for x, y, v in zip(dots["x"], dots["y"], dots["z"], strict=True):
            assert v == pytest.approx(sent[round((y + 1) * 10)][round((x + 1) * 10)])
    previews = page.evaluate(
        """async (bodies) => { const m = await import('/static/js/partial.js');
                 return bodies.map(b => m.previewSurface(JSON.parse(b)).values.train_loss); }""",
        [bodies[sid] for sid in ("ab03", "ab06", "ab10")],
    )
    for sid, preview in zip(("ab03", "ab06", "ab10"), previews, strict=True):
        assert _is_bowl(preview), f"{counts[sid]} points: walls"


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
