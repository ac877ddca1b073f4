"""The surface page's sharpness panel in a real browser: computed from its button through the
service, it draws λmax per snapshot with the loss on a log second axis and states the numbers
the API stores."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import SECOND_SURFACE, ensure_surface, get_json  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

SURFACE = {**SECOND_SURFACE, "grid": {"nx": 3, "ny": 3, "xrange": [-1, 1], "yrange": [-1, 1]},
           "label": "residual MLP (sharpness)"}  # fmt: skip


def test_sharpness_panel_computes_and_draws_lambda_max(server: str, page: Any) -> None:
    surface_id = ensure_surface(server, SURFACE)
    page.goto(f"{server}/#/surfaces/{surface_id}")
    panel = page.get_by_role("region", name="Sharpness")
    button = panel.locator(f"[data-sharpness-compute='{surface_id}']")
    button.wait_for(state="visible")
    page.wait_for_function(
        "(id) => !document.querySelector(`[data-sharpness-compute='${id}']`).disabled",
        arg=surface_id,
    )
    button.click()
    page.wait_for_function(
        "() => document.querySelector('.plot-sharpness')?.dataset.ready === 'true'",
        timeout=150_000,
    )
    stored = get_json(f"{server}/api/surfaces/{surface_id}/sharpness")
    figure = page.evaluate(
        """() => { const d = document.querySelector('.plot-sharpness');
                  return { names: d.data.map(t => t.name), y: d.data[0].y,
                           log: d.layout.yaxis2.type }; }"""
    )
    assert figure["names"][0] == "λmax" and figure["names"][-1] == "training loss"
    assert figure["y"] == [p["lambda_max"] for p in stored["points"]]
    assert figure["log"] == "log"
    last = stored["points"][-1]["lambda_max"]
    assert f"last λmax {float(f'{last:.4g}'):g}" in panel.locator(".sharpness-summary").inner_text()
    assert button.is_hidden()
