"""The skip-vs-plain story in a real browser: the gradient-flow panel of the compare page (plain
vs residual on one log-scale plot over depth, computed from the page's buttons) and the report
view (a finished report opens as its offline page; the start button queues the documented
recipe). Every page fails its test on a request to any host but the server."""

from __future__ import annotations

import urllib.request
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

GRID = {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-1, 1]}
PAIR = [
    {**SECOND_SURFACE, "model": "mlp-plain", "grid": GRID, "label": "plain MLP (story)"},
    {**SECOND_SURFACE, "grid": GRID, "label": "residual MLP (story)"},
]
TINY_REPORT = {
    "pairs": [["mlp-residual", "mlp-plain"]],
    "seeds": [0],
    "epochs": 1,
    "train_size": 96,
    "test_size": 48,
    "ranges": [[0.25, 3]],
    "model_args": {"depth": 2, "width": 8},
}


def test_gradient_flow_panel_on_compare(server: str, page: Any) -> None:
    """One button computes the profile of every compared surface (each row names its own):
    the first surface's button no longer reads as if it covered them all."""
    ids = [ensure_surface(server, body) for body in PAIR]
    page.goto(f"{server}/#/compare/{','.join(ids)}")
    everything = page.locator("[data-flow-compute-all]")
    everything.wait_for(state="visible")
    for surface_id, body in zip(ids, PAIR, strict=True):
        button = page.locator(f"[data-flow-compute='{surface_id}']")
        assert button.inner_text() == f"Compute for {body['label']}"
    assert everything.inner_text() == "Compute gradient flow for all 2 surfaces"
    everything.click()
    page.wait_for_function(
        "() => { const d = document.querySelector('.plot-flow');"
        " return d && d.dataset.ready === 'true' && d.dataset.traces === '4'; }",
        timeout=150_000,
    )
    figure = page.evaluate(
        """() => { const d = document.querySelector('.plot-flow');
                  return { log: d.layout.yaxis.type, names: d.data.map(t => t.name),
                           depth: d.data[0].x.length }; }"""
    )
    assert figure["log"] == "log"
    assert sorted(figure["names"]) == sorted(
        f"{p['label']} · {which}" for p in PAIR for which in ("init", "trained")
    )
    stored = get_json(f"{server}/api/surfaces/{ids[0]}/gradient-flow")
    assert figure["depth"] == len(stored["trained"]["depth"])
    assert "input/output gradient ratio" in page.locator(".flow-summary").inner_text()


def test_report_view_opens_the_offline_report(server: str, page: Any) -> None:
    reply = post_json(f"{server}/api/reports", TINY_REPORT)
    report_id = reply["report"]["id"]
    if reply["job"] and reply["job"]["status"] != "done":
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    page.goto(f"{server}/#/reports")
    link = page.locator(f"[data-report-link='{report_id}']")
    link.wait_for(state="visible")
    page.goto(server + link.get_attribute("href"))
    for section in ("degradation", "surfaces", "gradient-flow", "spectra"):
        assert page.locator(f"section#{section}").count() == 1
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0")

    page.goto(f"{server}/#/reports")
    page.locator("#start-report").click()  # the documented recipe, with the server's defaults
    dialog = page.locator("dialog.plan-dialog")  # it asks first
    dialog.get_by_role("button", name="Start", exact=True).click()
    pending = page.locator("li.report .progress")
    pending.first.wait_for(state="visible")
    reports = get_json(f"{server}/api/reports")
    started = [r for r in reports if r["id"] != report_id]
    assert len(started) == 1 and started[0]["recipe"]["pairs"][0] == [
        "resnet20",
        "resnet20-noshort",
    ]
    job_id = started[0]["job"]["id"]
    request = urllib.request.Request(f"{server}/api/jobs/{job_id}", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
    assert wait_for_job(server, job_id) == "cancelled"
