"""The web page in a real browser: Debian's Chromium driven by Playwright against a real
``landscape serve`` subprocess (browser_support.py).

What a user does: request a surface with the form and watch it fill in, read the plot back
from the DOM, compare two surfaces with linked cameras, see validation errors in plain words.
Screenshots land in ``test-artifacts/``. Waits are on conditions (selectors, JS predicates,
the job's event stream), never fixed sleeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import (  # noqa: E402
    JOB_TIMEOUT_MS,
    SECOND_SURFACE,
    UI_TIMEOUT_MS,
    get_json,
    post_json,
    surface_shape,
    wait_for_job,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures


def test_empty_gallery_paints_without_plotly(server: str, page: Any) -> None:
    page.goto(f"{server}/")
    page.get_by_role("heading", level=1, name="Loss surfaces").wait_for()
    page.get_by_text("No surfaces yet").wait_for()
    # Fast first paint: the 4 MB plotting library is loaded only when a plot is needed.
    assert page.evaluate("() => typeof window.Plotly") == "undefined"
    assert page.evaluate("() => document.activeElement.tagName") == "H1"


def test_form_shows_every_error_at_once_next_to_its_field(
    server: str, page: Any, artifacts_dir: Path
) -> None:
    """Point 11: the fields' own words, next to each field, all at once; limits and the
    default recipe come from GET /api/config; a server 422 lands on its field too."""
    config = get_json(f"{server}/api/config")
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.wait_for_function(
        "(n) => document.querySelector('#f-epochs').value === String(n)",
        arg=config["defaults"]["epochs"],
    )
    assert config["defaults"]["epochs"] == 30  # the demo's recipe
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "0")
    page.fill("#f-nx", "1")
    page.fill("#f-xmin", "2")
    page.fill("#f-xmax", "1")
    page.get_by_role("button", name="Compute surface").click()
    errors = page.locator(".form-errors")
    errors.wait_for()
    text = errors.inner_text()
    assert "Training epochs: must be at least 1" in text, text
    assert "Points along x: must be at least 2" in text, text
    assert "x range: “from” (2) must be less than “to” (1)" in text, text
    assert "Input should" not in text and "grid.nx" not in text, text
    for field in ("f-epochs", "f-nx", "f-xmin", "f-xmax"):
        assert page.locator(f"#{field}").get_attribute("aria-invalid") == "true", field
        assert page.locator(f"#{field}-error").is_visible(), field
    assert "at least 2" in page.locator("#f-nx-error").inner_text()
    assert "less than" in page.locator("#f-xmax-error").inner_text()
    assert page.evaluate("() => document.activeElement.classList.contains('form-errors')")
    page.screenshot(path=str(artifacts_dir / "browser-validation-error.png"), full_page=True)

    # Over this server's point limit (from /api/config), shown on both axes' fields.
    limit = config["limits"]["max_grid_points"]
    page.fill("#f-epochs", "1")
    page.fill("#f-xmin", "-1")
    page.fill("#f-xmax", "1")
    page.fill("#f-nx", "100")
    page.fill("#f-ny", "100")
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_function(
        "(n) => document.querySelector('.form-errors').innerText.includes(`limit of ${n}`)",
        arg=limit,
    )
    assert page.locator("#f-ny").get_attribute("aria-invalid") == "true"
    assert "#/new" in page.url  # nothing was queued

    # A check only the server makes (label length): its 422 `loc` finds the field.
    page.fill("#f-nx", "5")
    page.fill("#f-ny", "5")
    page.fill("#f-label", "x" * 201)
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_function(
        "() => /^Label: /m.test(document.querySelector('.form-errors').innerText)"
    )
    assert page.locator("#f-label").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-label-error").is_visible()


def test_request_form_shows_progress_and_fills_the_surface(
    server: str, page: Any, artifacts_dir: Path, state: dict[str, Any]
) -> None:
    # Point 9: nothing the page asks for may be missing while the model trains.
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "3")
    page.fill("#f-nx", "7")
    page.fill("#f-ny", "7")
    page.fill("#f-label", "mlp-plain (browser test)")
    page.get_by_role("button", name="Compute surface").click()

    page.wait_for_url("**/#/surfaces/*")
    surface_id = page.url.rsplit("/", 1)[1]
    state["form_surface"] = surface_id
    progress = page.get_by_role("progressbar")
    progress.wait_for()
    # While the points come in, the header leaves the count to the bar (one source) and
    # the numbers box says what the bar says.
    page.locator(".progress-text", has_text="points").wait_for(timeout=JOB_TIMEOUT_MS)
    bar = page.locator(".progress-text").inner_text()
    header = page.locator(".meta").inner_text()
    assert " of 49 points" not in header or "Complete" in bar, (header, bar)
    page.wait_for_selector('[role=progressbar][aria-valuenow="100"]', timeout=JOB_TIMEOUT_MS)
    # 100% can show while the last point is stored, just before the job is marked done.
    page.locator(".progress-text", has_text="Complete").wait_for()

    # The surface is complete once the final GET lands: no gaps left in the plotted z.
    page.wait_for_function(
        """() => { const d = document.querySelector('#plot');
                   const t = d && d.data && d.data[0];
                   return t && t.type === 'surface' && t.z.length === 7
                     && t.z.every(r => r.every(v => v !== null)); }""",
        timeout=UI_TIMEOUT_MS,
    )
    assert surface_shape(page, "#plot") == ["surface", 7, 7]
    assert page.locator("h1").inner_text() == "mlp-plain (browser test)"
    assert not missing, f"requests answered 404 while the surface was computed: {missing}"
    page.screenshot(path=str(artifacts_dir / "browser-surface.png"), full_page=True)

    # Contour and heatmap views of the same numbers, log scale, accuracy.
    page.locator("label", has_text="Heatmap").click()
    page.wait_for_function("() => document.querySelector('#plot').data[0].type === 'heatmap'")
    assert surface_shape(page, "#plot") == ["heatmap", 7, 7]
    page.get_by_label("Log scale").check()
    page.wait_for_function(
        "() => /log/.test(document.querySelector('#plot').data[0].colorbar.title.text)"
    )
    page.locator("label", has_text="Accuracy").click()
    page.wait_for_function(
        "() => /accuracy/.test(document.querySelector('#plot').data[0].colorbar.title.text)"
    )
    hrefs = page.locator(".downloads a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    assert f"/api/surfaces/{surface_id}/file" in hrefs
    assert f"/api/surfaces/{surface_id}/html" in hrefs


def test_curvature_panel_shows_the_hessian_computed_via_the_api(
    server: str, page: Any, artifacts_dir: Path, state: dict[str, Any]
) -> None:
    """POST /api/surfaces/{id}/hessian, then the surface view's Curvature panel shows the
    same eigenvalues, draws the |λmin/λmax| map (a 2×2 heatmap: a few seconds of CPU) and the
    eigenvalue density (a line on a log axis); the form asks for another density."""
    if "form_surface" not in state:
        reply = post_json(f"{server}/api/surfaces", {**SECOND_SURFACE, "model": "mlp-plain"})
        state["form_surface"] = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
        if reply["job"] and reply["job"]["status"] != "done":
            assert wait_for_job(server, reply["job"]["id"]) == "done"
    surface_id = state["form_surface"]
    body = {"top": 1, "bottom": 1, "curvature_grid": 2, "train_size": 100,
            "density_probes": 2, "density_steps": 10}  # fmt: skip
    reply = post_json(f"{server}/api/surfaces/{surface_id}/hessian", body)
    if reply["hessian"] is None:
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    hessian = get_json(f"{server}/api/surfaces/{surface_id}")["hessian"]

    page.goto(f"{server}/#/surfaces/{surface_id}")
    panel = page.get_by_role("region", name="Curvature")
    shown = panel.locator("dd[data-stat='lambda_max']")
    shown.wait_for()
    assert float(shown.get_attribute("data-value")) == hessian["lambda_max"]
    lambda_min = panel.locator("dd[data-stat='lambda_min']").get_attribute("data-value")
    assert float(lambda_min) == hessian["lambda_min"]
    page.wait_for_function("() => document.querySelector('.plot-curvature')?.dataset.ready")
    heatmap = page.evaluate(
        "() => { const t = document.querySelector('.plot-curvature').data[0];"
        " return [t.type, t.z.length, t.z[0].length]; }"
    )
    assert heatmap == ["heatmap", 2, 2]
    page.wait_for_function("() => document.querySelector('.plot-density')?.dataset.ready")
    drawn = page.evaluate(
        "() => { const d = document.querySelector('.plot-density');"
        " return [d.data[0].x.length, d.layout.yaxis.type]; }"
    )
    assert drawn == [len(hessian["density"]["grid"]), "log"]
    negative = panel.locator("dd[data-stat='negative_fraction']").get_attribute("data-value")
    assert float(negative) == hessian["density"]["negative_fraction"]
    shown = panel.locator("dd[data-stat='negative_fraction']").inner_text()
    assert "of eigenvalues below −" in shown and "interval" in shown  # mass below −ε, bounded
    sentence = panel.locator("[data-stat='plane_curvature']").inner_text()
    assert sentence == hessian["plane_curvature"]["sentence"]  # the CLI's words
    page.screenshot(path=str(artifacts_dir / "browser-curvature.png"), full_page=True)

    # The form: another analysis (two largest eigenvalues, a density of 40-step probes, no map)
    # replaces the stored one.
    page.fill("#c-top", "2")
    page.fill("#c-bottom", "0")
    page.fill("#c-curvature_grid", "0")
    page.get_by_label("Density probes").fill("2")
    page.get_by_label("Estimate tr(H) (Hutchinson)").uncheck()
    page.get_by_label("Training samples").fill("100")
    panel.get_by_role("button", name="Compute curvature").click()
    panel.get_by_role("progressbar", name="Computing curvature").wait_for()
    panel.locator("dd[data-stat='top']").wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_selector(".plot-curvature", state="hidden")
    replaced = get_json(f"{server}/api/surfaces/{surface_id}")["hessian"]
    assert len(replaced["top_eigenvalues"]) == 2
    assert replaced["density"]["probes"] == 2 and replaced["density"]["steps"] == 40
    panel.get_by_text("density: 2 probes × 40 Lanczos steps").wait_for()


def test_compare_view_links_two_real_surfaces(
    server: str, page: Any, artifacts_dir: Path, state: dict[str, Any]
) -> None:
    if "form_surface" not in state:
        reply = post_json(f"{server}/api/surfaces", {**SECOND_SURFACE, "model": "mlp-plain"})
        state["form_surface"] = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
        if reply["job"]:
            assert wait_for_job(server, reply["job"]["id"]) == "done"
    reply = post_json(f"{server}/api/surfaces", SECOND_SURFACE)
    second = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"] and reply["job"]["status"] not in ("done",):
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    ids = [state["form_surface"], second]

    page.goto(f"{server}/#/compare/{','.join(ids)}")
    page.get_by_role("heading", level=1, name="Compare 2 surfaces").wait_for()
    page.wait_for_function(
        """() => { const plots = [...document.querySelectorAll('.plot-compare')];
                   return plots.length === 2 && plots.every(d => d.dataset.ready === 'true'
                     && d.data[0].z.every(r => r.every(v => v !== null))); }""",
        timeout=JOB_TIMEOUT_MS,
    )
    shapes = [surface_shape(page, f".plot-compare[data-surface-id='{i}']") for i in ids]
    assert shapes == [["surface", 7, 7], ["surface", 7, 7]]

    # One colour and z range for both.
    ranges = page.evaluate(
        """() => [...document.querySelectorAll('.plot-compare')].map(
             d => [d.data[0].cmin, d.data[0].cmax, d.layout.scene.zaxis.range])"""
    )
    assert ranges[0] == ranges[1], ranges
    assert ranges[0][0] < ranges[0][1]

    # Rotating one plot moves the other (the camera is propagated through plotly_relayout).
    page.evaluate(
        """() => Plotly.relayout(document.querySelectorAll('.plot-compare')[0],
             {'scene.camera': {eye: {x: 2.1, y: -0.4, z: 0.6}}})"""
    )
    page.wait_for_function(
        """() => { const d = document.querySelectorAll('.plot-compare')[1];
                   const eye = d.layout.scene.camera && d.layout.scene.camera.eye;
                   return eye && Math.abs(eye.x - 2.1) < 1e-6 && Math.abs(eye.y + 0.4) < 1e-6; }"""
    )
    page.evaluate(
        """() => Plotly.relayout(document.querySelectorAll('.plot-compare')[1],
             {'scene.camera': {eye: {x: 1.6, y: 1.6, z: 1.1}}})"""
    )
    page.wait_for_function(
        """() => { const e = document.querySelectorAll('.plot-compare')[0].layout.scene.camera.eye;
                   return Math.abs(e.x - 1.6) < 1e-6; }"""
    )
    page.screenshot(path=str(artifacts_dir / "browser-compare.png"), full_page=True)

    # The gallery lists both, with drawn previews; picking two opens the same comparison.
    page.goto(f"{server}/#/")
    page.locator(".card").nth(1).wait_for()
    assert page.locator(".card").count() == 2
    page.wait_for_function(
        """() => [...document.querySelectorAll('canvas.preview')].every(c => {
                 const px = c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data;
                 return px[3] > 0; })"""
    )
    page.screenshot(path=str(artifacts_dir / "browser-gallery.png"), full_page=True)
    for surface_id in ids:
        page.locator(f"#pick-{surface_id}").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url("**/#/compare/*")
    assert sorted(page.url.rsplit("/", 1)[1].split(",")) == sorted(ids)


def test_delete_button_asks_then_removes_the_surface(server: str, page: Any) -> None:
    reply = post_json(f"{server}/api/surfaces", SECOND_SURFACE)  # cached after the comparison
    surface_id = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"] and reply["job"]["status"] != "done":
        assert wait_for_job(server, reply["job"]["id"]) == "done"

    page.goto(f"{server}/#/surfaces/{surface_id}")
    opener = page.get_by_role("button", name="Delete…")
    opener.click()
    assert opener.get_attribute("aria-expanded") == "true"
    confirm = page.get_by_role("group", name="Delete")
    assert page.evaluate("() => document.activeElement.textContent") == "Keep it"
    confirm.get_by_role("button", name="Delete surface").click()

    page.wait_for_url(f"{server}/#/")
    page.wait_for_selector(".cards:not([aria-busy])")
    assert page.locator(f".card[data-id='{surface_id}']").count() == 0
    assert all(s["id"] != surface_id for s in get_json(f"{server}/api/surfaces"))


def test_narrow_screen_and_unknown_pages(server: str, open_page: Any, artifacts_dir: Path) -> None:
    page = open_page(390, 844)
    page.goto(f"{server}/#/new")
    page.get_by_role("heading", level=1, name="New surface").wait_for()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px wide)"
    page.screenshot(path=str(artifacts_dir / "browser-narrow-form.png"), full_page=True)
    page.goto(f"{server}/#/surfaces/0123456789abcdef")
    page.get_by_role("heading", level=1, name="Surface not found").wait_for()
    page.goto(f"{server}/#/nowhere")
    page.get_by_role("heading", level=1, name="Page not found").wait_for()


def test_preset_opens_comparison_and_cancel_stops_both_jobs(
    server: str, page: Any, artifacts_dir: Path
) -> None:
    page.goto(f"{server}/#/")
    page.get_by_role("button", name="ResNet-20 vs ResNet-20 without shortcuts").click()
    # The page says what the preset would queue and asks first (web/js/presets.js).
    page.locator("dialog.plan-dialog").get_by_role("button", name="Start", exact=True).click()
    page.wait_for_url("**/#/compare/*")
    ids = page.url.rsplit("/", 1)[1].split(",")
    assert len(ids) == 2
    panels = page.locator(".panel")
    panels.nth(1).locator("[role=progressbar]").wait_for()
    assert panels.count() == 2
    assert "ResNet-20" in panels.nth(0).inner_text()

    # Cancel both from the page: each panel says so and offers to resume.
    for index in (1, 0):  # the queued one first, then the running one
        panels.nth(index).get_by_role("button", name="Cancel").click()
    for index in (0, 1):
        panels.nth(index).locator(".progress-text", has_text="Cancelled").wait_for()
        panels.nth(index).get_by_role("button", name="Resume").wait_for()
    page.screenshot(path=str(artifacts_dir / "browser-preset-cancelled.png"), full_page=True)
    jobs = get_json(f"{server}/api/jobs")
    assert {job["status"] for job in jobs if job["surface_id"] in ids} == {"cancelled"}


def test_pca_surface_draws_the_training_path(server: str, page: Any) -> None:
    """A PCA surface (Li et al. 2018, §7) shows its trajectory and explained variance."""
    body = {
        **SECOND_SURFACE,
        "model": "mlp-plain",
        "train": {"epochs": 2},
        "grid": {"nx": 5, "ny": 5, "xrange": [-10, 10], "yrange": [-10, 10]},
        "directions": {"kind": "pca"},
        "label": "mlp-plain PCA (browser test)",
    }
    reply = post_json(f"{server}/api/surfaces", body)
    surface_id = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"]:
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    page.goto(f"{server}/#/surfaces/{surface_id}")
    page.wait_for_function("() => document.querySelector('#plot')?.dataset.ready === 'true'")
    path = page.evaluate(
        """() => { const d = document.querySelector('#plot');
                   const t = d.data.find(t => t.name === 'trajectory');
                   const s = d.layout.scene || {};
                   const title = (s.xaxis || d.layout.xaxis).title.text;
                   return t && [t.x.length, title.startsWith('PC1 (')]; }"""
    )
    assert path == [3, True]
