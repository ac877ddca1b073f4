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
