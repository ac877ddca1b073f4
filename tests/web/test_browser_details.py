"""Small things a user notices, in a real browser: the form says when its request was already
computed, the gallery lists jobs in the order they run, long provenance values wrap by line
(not a word per line) and the help page has the page's header. Every page fails its test on a
request to any host but the server."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import SECOND_SURFACE, ensure_surface, post_json, wait_for_job  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

# Exactly what the form below sends (its defaults but model, epochs and grid size).
FORM_REQUEST = {
    "model": "mlp-residual",
    "dataset": "digits",
    "train": {"epochs": 1},
    "grid": {"nx": 3, "xrange": [-1, 1], "ny": 3, "yrange": [-1, 1]},
    "directions": {"kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0},
    "splits": ["train"],
    "loss": "cross_entropy",
    "estimate": None,
}


@pytest.fixture(scope="module")
def computed(server: str) -> str:
    return ensure_surface(server, FORM_REQUEST)


def test_the_form_says_its_request_was_already_computed(
    server: str, page: Any, computed: str
) -> None:
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-residual']").wait_for(state="attached")
    page.wait_for_function("() => document.querySelector('#f-mode-hint').textContent")
    page.select_option("#f-model", "mlp-residual")
    page.fill("#f-epochs", "1")
    page.fill("#f-nx", "3")
    page.fill("#f-ny", "3")
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_url(f"**/#/surfaces/{computed}")
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert notice.inner_text().startswith("Already computed: opening it."), notice.inner_text()
    assert "same request" in notice.inner_text()
    page.locator("h1", has_text="mlp-residual").wait_for()
    assert notice.is_visible()  # still there once the surface has loaded


def test_gallery_lists_jobs_in_the_order_they_run(server: str, page: Any) -> None:
    """Three identical jobs queued one after the other are listed first to last (the API
    answers newest first), and the list says its order."""
    grid = {"nx": 30, "ny": 30, "xrange": [-1, 1], "yrange": [-1, 1]}
    labels = [f"queued {k} (order)" for k in (1, 2, 3)]
    bodies = [
        {**SECOND_SURFACE, "train": {"epochs": 1, "seed": 20 + k}, "grid": grid, "label": label}
        for k, label in enumerate(labels)
    ]
    jobs = [post_json(f"{server}/api/surfaces", body)["job"] for body in bodies]
    try:
        page.goto(f"{server}/#/")
        items = page.locator(".jobs .job-list li")
        items.nth(2).wait_for()
        shown = items.locator("a").all_inner_texts()
        assert shown == labels, shown
        assert "order it will run" in page.locator(".jobs").inner_text()
    finally:
        for job in jobs:
            request = urllib.request.Request(f"{server}/api/jobs/{job['id']}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()
        for job in jobs:
            assert wait_for_job(server, job["id"]) in ("cancelled", "done")


def test_long_provenance_values_wrap_by_line(server: str, page: Any, computed: str) -> None:
    """In the side panel an engine's reasons wrapped one word per line: none does now."""
    page.goto(f"{server}/#/surfaces/{computed}")
    about = page.get_by_role("region", name="About this surface")
    about.locator("[data-section=engine] dd").first.wait_for()
    lines = about.locator("dd").evaluate_all(
        """dds => dds.map(dd => { const range = document.createRange();
                   range.selectNodeContents(dd);
                   const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                   return [dd.textContent, dd.textContent.split(/\\s+/).length, tops.size]; })"""
    )
    several = [(text, words, n) for text, words, n in lines if words >= 4]
    assert several, lines  # the engine's "why" rows
    assert all(n < words / 2 for _, words, n in several), several


def test_the_help_page_has_the_pages_header(server: str, page: Any) -> None:
    page.goto(f"{server}/help/metrics")
    header = page.locator("header.topbar")
    assert header.locator(".brand").get_attribute("href") == "/#/"
    nav = header.get_by_role("navigation", name="Main")
    assert nav.locator("a").all_inner_texts() == ["Gallery", "Compare", "New surface", "Reports"]
    nav.get_by_role("link", name="Compare").click()
    page.wait_for_url("**/#/compare")
    page.locator("h1", has_text="Compare surfaces").wait_for()
