"""The surface page's sharpness panel in a real browser, computed from its button through the
service: along a training kept in snapshots (PCA directions) it draws λmax per snapshot with
the loss on a log second axis over whole decades, every legend entry a drawn line, whole-step
ticks; a zoo surface's checkpoint alone (one snapshot) is stated in words, not drawn as one
dot."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import SECOND_SURFACE, ensure_surface, get_json  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

GRID = {"nx": 3, "ny": 3, "xrange": [-1, 1], "yrange": [-1, 1]}
ZOO = {**SECOND_SURFACE, "grid": GRID, "label": "residual MLP (sharpness)"}
# PCA directions train with a snapshot per epoch: epochs 0 to 3, four λmax to draw.
TRAJECTORY = {**ZOO, "train": {"epochs": 3}, "directions": {"kind": "pca", "ignore": "biasbn"},
              "label": "residual MLP (sharpness along training)"}  # fmt: skip


def _compute(page: Any, server: str, surface_id: str) -> Any:
    """Open the surface, press "Compute sharpness" and wait for the job's result."""
    page.goto(f"{server}/#/surfaces/{surface_id}")
    panel = page.get_by_role("region", name="Sharpness")
    button = panel.locator(f"[data-sharpness-compute='{surface_id}']")
    button.wait_for(state="visible")
    page.wait_for_function(
        "(id) => !document.querySelector(`[data-sharpness-compute='${id}']`).disabled",
        arg=surface_id,
    )
    button.click()
    panel.locator(".sharpness-summary", has_text="λmax").wait_for(timeout=150_000)
    assert button.is_hidden()
    return panel


def test_sharpness_along_training_draws_lambda_max_and_the_loss(server: str, page: Any) -> None:
    surface_id = ensure_surface(server, TRAJECTORY)
    panel = _compute(page, server, surface_id)
    page.wait_for_function("() => document.querySelector('.plot-sharpness').dataset.ready")
    stored = get_json(f"{server}/api/surfaces/{surface_id}/sharpness")
    assert len(stored["points"]) == 4
    figure = page.evaluate(
        """() => { const d = document.querySelector('.plot-sharpness');
                  const ticks = (cls) => [...d.querySelectorAll(`.${cls} text`)]
                    .map(t => t.textContent);
                  return { names: d.data.map(t => t.name), y: d.data[0].y,
                           drawn: d.data.map(t => t.mode.includes('lines') && t.x.length > 1),
                           log: d.layout.yaxis2.type, range: d._fullLayout.yaxis2.range,
                           xticks: ticks('xtick'), y2ticks: ticks('y2tick') }; }"""
    )
    assert figure["names"] == ["λmax", "training loss"]  # no 2/η: SGD with momentum
    assert all(figure["drawn"]), figure  # every legend entry is a line on the plot
    assert figure["y"] == [p["lambda_max"] for p in stored["points"]]
    assert figure["log"] == "log"
    assert all(float(v).is_integer() for v in figure["range"]), figure["range"]  # whole decades
    assert figure["xticks"] == ["0", "1", "2", "3"], figure["xticks"]
    assert figure["y2ticks"] and all(re.fullmatch(r"10*", t) for t in figure["y2ticks"]), figure
    last = stored["points"][-1]["lambda_max"]
    assert f"last λmax {float(f'{last:.4g}'):g}" in panel.locator(".sharpness-summary").inner_text()


def test_one_snapshot_is_stated_not_drawn_as_one_dot(server: str, page: Any) -> None:
    surface_id = ensure_surface(server, ZOO)
    panel = _compute(page, server, surface_id)
    stored = get_json(f"{server}/api/surfaces/{surface_id}/sharpness")
    (point,) = stored["points"]
    assert point["snapshot"] == stored["checkpoint"]  # the checkpoint alone
    text = panel.locator(".sharpness-summary").inner_text()
    lam, loss = (float(f"{point[k]:.4g}") for k in ("lambda_max", "loss"))
    assert f"One snapshot, the trained weights: λmax {lam:g}" in text, text
    assert f"training loss {loss:g}" in text and "no curve to draw" in text, text
    plot = panel.locator(".plot-sharpness")
    assert plot.is_hidden() and plot.get_attribute("data-ready") is None
    assert panel.locator(".legend").count() == 0
