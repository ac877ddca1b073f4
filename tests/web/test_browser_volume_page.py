"""A 3D volume's page draws real pixels: the isosurface has a height and ink on its canvas,
the z slice is drawn at once and stays inside its card at a wide and a narrow window, and the
request form asks for a volume (``grid.dim`` 3 with ``nz`` and ``zrange``) that the server
accepts.

The volume is a real surface file written through ``landscape.storage`` and turned into the
API's JSON by ``api.views.surface_data``; the page gets it by request interception.
"""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from api.db import SurfaceRecord
from api.views import surface_data
from landscape import storage as store
from landscape.specs import GridSpec, SurfaceSpec

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, get_json, wait_for_job  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

VOLUME_ID = "ee01"
WIDTHS = [(1280, 900), (420, 860)]  # a desktop window and a phone


def _volume_body(path: Path) -> str:
    grid = GridSpec(n_x=9, n_y=9, z_range=(-1.0, 1.0), n_z=9)
    spec = SurfaceSpec(checkpoint="ckpt.pt", grid=grid)
    x, y = store.grid_coordinates(grid)
    directions = [{"w": torch.ones(2)} for _ in range(3)]
    store.create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance={"checkpoint_sha256": "ef" * 32}
    )
    flat = np.arange(grid.n_points)
    coords = store.flat_coordinates(x, y, flat, store.z_coordinates(grid))
    values = 1.0 + (coords**2 * np.arange(1, 4)).sum(axis=1)  # a bowl, steeper along z
    store.write_points(path, flat, {"train_loss": values, "train_acc": 1 / values})
    record = SurfaceRecord(
        id=VOLUME_ID, label="bowl volume", model="bowl", dataset="digits", checkpoint_id="c",
        request={},
    )  # fmt: skip
    return surface_data(record, store.read_surface(path)).model_dump_json()


def _ink(png: bytes) -> float:
    """The share of a screenshot's pixels that differ clearly from its corner (background)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(pixels - pixels[0, 0]).max(axis=2) > 40).mean())


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


@pytest.mark.parametrize("size", WIDTHS, ids=lambda s: f"{s[0]}px")
def test_a_volume_draws_its_isosurface_and_first_slice_inside_the_card(
    server: str, open_page: Any, tmp_path: Path, size: tuple[int, int], artifacts_dir: Path
) -> None:
    body = _volume_body(tmp_path / "v.h5")
    page = open_page(*size)
    page.route(
        f"{server}/api/surfaces/{VOLUME_ID}**",
        lambda route: route.fulfill(status=200, content_type="application/json", body=body),
    )
    page.goto(f"{server}/#/surfaces/{VOLUME_ID}")
    page.wait_for_function(
        "() => document.querySelector('[data-role=isosurface]')?.dataset.ready === 'true'"
    )
    # The first slice is drawn with the isosurface: no slider has moved.
    slice_plot = page.locator("[data-role=slice]")
    slice_plot.locator(".main-svg").first.wait_for()
    sent = json.loads(body)["values"]["train_loss"]
    first = int(page.locator(".volume-slider").input_value())
    np.testing.assert_allclose(
        page.evaluate("() => document.querySelector('[data-role=slice]').data[0].z"), sent[first]
    )
    page.screenshot(path=str(artifacts_dir / f"volume-{size[0]}.png"), full_page=True)

    iso = page.locator("[data-role=isosurface]")
    iso_box = iso.bounding_box()
    assert iso_box is not None and iso_box["height"] > 200, iso_box
    canvas = iso.locator(".gl-container canvas").first
    canvas_box = canvas.bounding_box()
    assert canvas_box is not None and canvas_box["height"] > 200, canvas_box
    assert _ink(canvas.screenshot()) > 0.02, "the isosurface's canvas is blank"

    _check_inside_the_card(page, size[0])
    assert _ink(slice_plot.screenshot()) > 0.05, "the slice plot is blank"
    # Another slice is drawn in the same place.
    page.locator(".volume-slider").evaluate(
        "(el) => { el.value = '8'; el.dispatchEvent(new Event('input')); }"
    )
    page.wait_for_function(
        "() => document.querySelector('[data-role=slice]').dataset.slice === '8'"
    )
    _check_inside_the_card(page, size[0])


def _check_inside_the_card(page: Any, width: int) -> None:
    card = page.locator(".plot-frame").bounding_box()
    assert card is not None
    for name in ("isosurface", "slice"):
        part = page.locator(f"[data-role={name}]")
        box = part.bounding_box()
        assert box is not None and box["height"] > 150, (name, box)
        assert _inside(box, card), f"{width} px: the {name} plot leaves its card: {box} {card}"
        for svg in part.locator(".main-svg").all():
            svg_box = svg.bounding_box()
            assert svg_box is not None and _inside(svg_box, card), (name, svg_box, card)


def test_the_form_asks_for_a_volume_and_the_server_accepts_it(server: str, page: Any) -> None:
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    assert not page.locator("#f-nz").is_visible()  # a 2D surface by default
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "1")
    page.select_option("#f-dim", "3")
    for field, value in [("nx", "5"), ("ny", "5"), ("nz", "4"), ("zmin", "-0.5"), ("zmax", "0.5")]:
        page.fill(f"#f-{field}", value)
    with page.expect_response(
        lambda r: r.url == f"{server}/api/surfaces" and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Compute surface").click()
    response = answer.value
    sent = json.loads(response.request.post_data or "{}")
    assert sent["grid"] == {
        "nx": 5, "xrange": [-1, 1], "ny": 5, "yrange": [-1, 1], "dim": 3, "nz": 4,
        "zrange": [-0.5, 0.5],
    }, sent["grid"]  # fmt: skip
    assert response.status == 202, response.text()
    job = response.json()["job"]
    stored = get_json(f"{server}/api/jobs/{job['id']}")["request"]["grid"]
    assert (stored["dim"], stored["nz"], stored["zrange"]) == (3, 4, [-0.5, 0.5]), stored
    # The form moves on to the new surface's page, which draws the computed volume. Its
    # surface is deleted after, so that the shared server's gallery stays as it was.
    page.wait_for_url(f"**/#/surfaces/{job['surface_id']}")
    assert wait_for_job(server, job["id"]) == "done"
    page.wait_for_function(
        "() => document.querySelector('[data-role=isosurface]')?.dataset.ready === 'true'",
        timeout=JOB_TIMEOUT_MS,
    )
    assert page.locator("[data-role=isosurface]").evaluate("d => d.data[0].value.length") == 100
    page.goto(f"{server}/#/")
    _send(f"{server}/api/surfaces/{job['surface_id']}", "DELETE")


def _send(url: str, method: str) -> None:
    """A request without a body (its answer's status is checked by urlopen)."""
    urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30).close()


def test_the_form_checks_a_volume_against_the_point_limit(server: str, page: Any) -> None:
    limit = get_json(f"{server}/api/config")["limits"]["max_grid_points"]
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.select_option("#f-dim", "3")
    side = round(limit ** (1 / 3)) + 1
    for field in ("nx", "ny", "nz"):
        page.fill(f"#f-{field}", str(side))
    page.fill("#f-zmax", "-2")
    page.get_by_role("button", name="Compute surface").click()
    text = page.locator(".form-errors").inner_text()
    assert f"{side}×{side}×{side} = {side**3} points is more than" in text, text
    assert "z range: “from” (-1) must be less than “to” (-2)" in text, text
    assert page.locator("#f-nz").get_attribute("aria-invalid") == "true"
