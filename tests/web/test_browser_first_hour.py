"""A new user's first hour, in a real browser, continued: every Lanczos result on the Curvature
panel says whether it converged; the reports page says what it would queue, with the queue's
estimate, and asks first; three surfaces side by side keep their axis titles and alignment.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import (  # noqa: E402
    SECOND_SURFACE,
    ensure_surface,
    get_json,
    post_json,
    wait_for_job,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures


def test_the_curvature_panel_says_what_converged(page: Any, server: str) -> None:
    surface_id = ensure_surface(server, SECOND_SURFACE)
    body = {"top": 1, "bottom": 1, "curvature_grid": 2, "curvature_steps": 2, "train_size": 100}
    reply = post_json(f"{server}/api/surfaces/{surface_id}/hessian", body)
    if reply["hessian"] is None:
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    page.goto(f"{server}/#/surfaces/{surface_id}")
    panel = page.get_by_role("region", name="Curvature")
    spectrum = panel.locator("dd[data-stat='spectrum_converged']")
    spectrum.wait_for()
    assert spectrum.inner_text().startswith("converged (residual ")
    assert "≤ tol" in spectrum.inner_text()
    points = panel.locator("dd[data-stat='map_converged']")
    assert points.get_attribute("class") == "not-converged"  # two steps a point are too few
    assert "4 of 4 points not converged" in points.inner_text()
    assert points.evaluate("el => getComputedStyle(el).fontWeight") == "600"


def test_the_reports_page_says_what_it_would_queue_and_asks(page: Any, server: str) -> None:
    before = {r["id"] for r in get_json(f"{server}/api/reports")}
    page.goto(f"{server}/#/reports")
    page.select_option("#report-family", "highway")
    page.check("#report-quick")
    page.locator("#start-report").click()
    dialog = page.locator("dialog.plan-dialog")
    dialog.wait_for()
    assert "Highway gates" in dialog.locator("#plan-title").inner_text()
    (item,) = dialog.locator("li[data-action='new']").all()
    words = item.inner_text()
    assert "new job: about" in words and "position " in words and "in the queue" in words
    assert "done by about" in words and "FLOP/s" in dialog.inner_text()
    dialog.get_by_role("button", name="Don’t start").click()
    assert page.locator("dialog.plan-dialog").count() == 0
    assert {r["id"] for r in get_json(f"{server}/api/reports")} == before  # nothing queued
