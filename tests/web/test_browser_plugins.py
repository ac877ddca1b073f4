"""A model from an installed plugin package in the web form: listed in the model select (from
GET /api/models, like the zoo's own) and computed to a complete surface when chosen."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, get_json, surface_shape  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

PLUGIN = "toy-cnn"  # tests/plugins/landscape_toy_plugin, installed by `make test`


def test_plugin_model_is_in_the_form_and_its_surface_completes(server: str, page: Any) -> None:
    listed = {m["name"]: m for m in get_json(f"{server}/api/models")}
    if PLUGIN not in listed:
        pytest.skip("the toy plugin package is not installed (make test installs it)")
    assert listed[PLUGIN]["source"].startswith("plugin landscape-toy-plugin ")
    page.goto(f"{server}/#/new")
    page.locator(f"#f-model option[value='{PLUGIN}']").wait_for(state="attached")
    page.select_option("#f-model", PLUGIN)
    page.fill("#f-epochs", "1")
    page.fill("#f-nx", "3")
    page.fill("#f-ny", "3")
    page.fill("#f-label", "toy-cnn (plugin browser test)")
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_url("**/#/surfaces/*")
    surface_id = page.url.rsplit("/", 1)[1]
    page.locator(".progress-text", has_text="Complete").wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_function(
        """() => { const d = document.querySelector('#plot');
                   const t = d && d.data && d.data[0];
                   return t && t.z.length === 3 && t.z.every(r => r.every(v => v !== null)); }""",
        timeout=JOB_TIMEOUT_MS,
    )
    assert surface_shape(page, "#plot")[1:] == [3, 3]
    surface = get_json(f"{server}/api/surfaces/{surface_id}")
    assert surface["model"] == PLUGIN and surface["status"] == "complete"


def test_a_plugin_loss_from_the_form_measures_and_trains_the_surface(
    server: str, page: Any
) -> None:
    """The loss select lists the server's losses with their formulas; the one chosen is the
    surface's loss and the zoo model's training loss, shown in "About this surface"."""
    listed = {loss["name"]: loss for loss in get_json(f"{server}/api/losses")}
    if "toy-hinge-l1" not in listed:
        pytest.skip("the toy plugin package is not installed (make test installs it)")
    page.goto(f"{server}/#/new")
    page.locator("#f-loss option[value='toy-hinge-l1']").wait_for(state="attached")
    options = page.eval_on_selector_all("#f-loss option", "os => os.map(o => o.value)")
    assert {"cross_entropy", "mse_onehot", "toy-hinge-l1"} <= set(options)
    page.select_option("#f-loss", "mse_onehot")
    assert listed["mse_onehot"]["formula"] in page.inner_text("#f-loss-desc")
    page.select_option("#f-loss", "toy-hinge-l1")
    assert listed["toy-hinge-l1"]["formula"] in page.inner_text("#f-loss-desc")
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "1")
    page.fill("#f-nx", "3")
    page.fill("#f-ny", "3")
    page.fill("#f-label", "mlp-plain under a plugin loss (browser test)")
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_url("**/#/surfaces/*")
    surface_id = page.url.rsplit("/", 1)[1]
    page.locator(".progress-text", has_text="Complete").wait_for(timeout=JOB_TIMEOUT_MS)
    surface = get_json(f"{server}/api/surfaces/{surface_id}")
    assert surface["loss"] == "toy-hinge-l1"
    assert surface["provenance"]["train"]["loss"] == "toy-hinge-l1"
    about = page.get_by_role("region", name="About this surface")
    about.locator("[data-section='grid'] dd", has_text="toy-hinge-l1").wait_for()
    assert "toy-hinge-l1" in about.locator("[data-section='training']").inner_text()
