"""An estimated surface in a real browser: the error view draws each point's stated interval
as a heatmap, the numbers say "estimate ±x %, n of N", and "Make exact" runs its job on the
page until every value is exact."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, ensure_surface, get_json  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

# The whole digits training split (1,437 samples: stages 256, 512, 1024, N), so points stop
# before N and there is something to make exact.
SURFACE = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 1},
    "grid": {"nx": 5, "ny": 5, "xrange": [-0.5, 0.5], "yrange": [-0.5, 0.5]},
    "estimate": {"target": 0.05, "kind": "relative"},
    "label": "estimated MLP (explore)",
}


def _coloured_pixels(png: bytes) -> int:
    """Saturated pixels (Viridis cells; the page itself is white and grey)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


def test_error_view_numbers_and_make_exact(server: str, page: Any) -> None:
    surface_id = ensure_surface(server, SURFACE)
    stored = get_json(f"{server}/api/surfaces/{surface_id}")["estimate"]
    assert stored and not stored["exact"]
    page.goto(f"{server}/#/")  # the gallery's card says it is an estimate
    card = page.locator(f".card[data-id='{surface_id}']")
    card.wait_for()
    assert re.search(r"estimate ±[\d.]+ %, n [\d,]+ of 1,437", card.inner_text())
    page.goto(f"{server}/#/surfaces/{surface_id}")
    page.wait_for_function("() => document.querySelector('#plot')?.dataset.ready === 'true'")

    numbers = page.locator("[data-stat='values']")
    pattern = r"estimate ±[\d.]+ %, n [\d,]+ of 1,437"
    assert re.fullmatch(pattern, numbers.inner_text().strip()), numbers.inner_text()
    box = page.get_by_role("region", name="Estimate")
    assert "within ±5 % of the loss" in box.inner_text()
    assert stored["method_text"] in box.inner_text()

    page.get_by_role("radio", name="Error").check(force=True)
    page.wait_for_function("() => document.querySelector('#plot').dataset.view === 'error'")
    page.wait_for_function("() => document.querySelector('#plot').data?.[0]?.type === 'heatmap'")
    drawn = page.evaluate(
        "() => { const d = document.querySelector('#plot'); return { z: d.data[0].z, "
        "title: d.data[0].colorbar.title.text }; }"
    )
    assert "interval ±" in drawn["title"] and len(drawn["z"]) == 5
    shown = np.array(drawn["z"], dtype=float)
    assert np.isfinite(shown).sum() >= 20 and np.nanmax(shown) > 0
    assert _coloured_pixels(page.locator("#plot").screenshot()) > 5000

    # compared with the exact surface, only the estimate's panel says it rests on one
    exact_id = ensure_surface(server, {**SURFACE, "estimate": None, "label": "exact MLP"})
    page.goto(f"{server}/#/compare/{surface_id},{exact_id}")
    marked = page.locator("[data-role='estimate']")
    marked.first.wait_for()
    assert marked.count() == 1 and "estimate ±" in marked.inner_text()
    assert "estimate ±" in page.locator(f"#panel-{surface_id}").locator("..").inner_text()

    page.goto(f"{server}/#/surfaces/{surface_id}")
    page.get_by_role("button", name="Make exact").wait_for()
    # every stage and status the make-exact progress panel shows, however quickly it ends
    page.evaluate(
        """() => { window.seen = new Set(); new MutationObserver(() => {
             const p = document.querySelector('.estimate-box .progress-panel');
             if (p) window.seen.add(`${p.dataset.status}:${p.dataset.stage}`);
           }).observe(document.body, { subtree: true, childList: true, attributes: true }); }"""
    )
    page.get_by_role("button", name="Make exact").click()
    page.wait_for_function(
        "() => document.querySelector('.estimate-box')?.dataset.exact === 'true'",
        timeout=JOB_TIMEOUT_MS,
    )
    page.wait_for_function(
        "() => document.querySelector(\"[data-stat='values']\")?.textContent.trim() === 'exact'"
    )
    assert get_json(f"{server}/api/surfaces/{surface_id}")["estimate"]["exact"] is True
    assert "Made exact" in page.locator(".estimate-box").inner_text()
    seen = page.evaluate("() => [...window.seen]")
    # the job's own progress was shown (a quick job may skip straight from queued to done)
    assert "done:finished" in seen and {"queued:queued", "running:exact"} & set(seen)
