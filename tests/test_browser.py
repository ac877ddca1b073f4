"""The web page in a real browser: Debian's Chromium driven by Playwright against a real
``landscape serve`` subprocess on a free port (fresh data folder, CPU, tiny jobs).

What a user does: request a surface with the form and watch it fill in, read the plot back
from the DOM, compare two surfaces with linked cameras, see validation errors in plain words.
Screenshots land in ``test-artifacts/``. Waits are on conditions (selectors, JS predicates,
the job's event stream), never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_MS = 150_000  # a tiny job; generous because CI machines are shared and slow
UI_TIMEOUT_MS = 30_000

# The second surface of the comparison, requested through the API (the first comes from the
# form). Small on purpose: a few seconds on one CPU core.
SECOND_SURFACE: dict[str, Any] = {
    "model": "mlp-residual",
    "dataset": "digits",
    "train": {"epochs": 1},
    "train_size": 300,
    "grid": {"nx": 7, "ny": 7, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 1},
    "label": "mlp-residual (browser test)",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _post_json(url: str, body: dict[str, Any]) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_for_job(base: str, job_id: str, timeout: float = JOB_TIMEOUT_MS / 1000) -> str:
    """Follow the job's server-sent events until its final event; return that event's name."""
    url = f"{base}/api/jobs/{job_id}/events"
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event in ("done", "failed", "cancelled"):
                    return event
    return _get_json(f"{base}/api/jobs/{job_id}")["status"]  # stream ended without a final event


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `landscape serve` (API + page + one in-process worker) on a free port."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # Fast and quiet on a shared CPU: no torch.compile, one engine process, quick polling.
        "LANDSCAPE_DEVICE": "cpu",
        "LANDSCAPE_ENGINE_WORKERS": "1",
        "LANDSCAPE_ENGINE_COMPILE": "false",
        "LANDSCAPE_PROGRESS_EVERY_SECONDS": "0",
        "LANDSCAPE_EVENTS_POLL_SECONDS": "0.1",
        "LANDSCAPE_POLL_SECONDS": "0.1",
        "LANDSCAPE_MAX_GRID_POINTS": "2000",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("LANDSCAPE_API_TOKEN", None)
    log_path = data_dir / "serve.log"
    script = Path(sys.executable).with_name("landscape")  # the venv's console script
    launcher = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from landscape.cli import main; sys.exit(main())"]
    )
    command = [
        *launcher, "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"landscape serve exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if _get_json(f"{base}/healthz", timeout=1)["status"] == "ok":
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"landscape serve did not answer /healthz in 60 s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)  # polling a starting process: there is no event to wait on
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`make test` does it via "
            "scripts/ensure-test-tools.sh)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; uncaught JS errors fail the test that caused them."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture(scope="session")
def state() -> dict[str, Any]:
    """Ids shared between tests (the form's surface is reused by the comparison)."""
    return {}


def _surface_shape(page: Any, selector: str) -> list[Any]:
    return page.evaluate(
        """(sel) => { const d = document.querySelector(sel); const t = d.data[0];
                     return [t.type, t.z.length, t.z[0].length]; }""",
        selector,
    )


def test_empty_gallery_paints_without_plotly(server: str, page: Any) -> None:
    page.goto(f"{server}/")
    page.get_by_role("heading", level=1, name="Loss surfaces").wait_for()
    page.get_by_text("No surfaces yet").wait_for()
    # Fast first paint: the 4 MB plotting library is loaded only when a plot is needed.
    assert page.evaluate("() => typeof window.Plotly") == "undefined"
    assert page.evaluate("() => document.activeElement.tagName") == "H1"


def test_validation_errors_are_shown_in_plain_words(
    server: str, page: Any, artifacts_dir: Path
) -> None:
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-nx", "0")
    page.get_by_role("button", name="Compute surface").click()
    errors = page.locator(".form-errors")
    errors.wait_for()
    text = errors.inner_text()
    assert "grid.nx" in text and "greater than or equal to" in text, text
    assert page.locator("#f-nx").get_attribute("aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.classList.contains('form-errors')")
    page.screenshot(path=str(artifacts_dir / "browser-validation-error.png"), full_page=True)

    # A grid over the server's point limit: a plain-string 422 from the planner.
    page.fill("#f-nx", "100")
    page.fill("#f-ny", "100")
    page.get_by_role("button", name="Compute surface").click()
    page.wait_for_function(
        "() => /grid|points/i.test(document.querySelector('.form-errors').innerText)"
        " && !/grid\\.nx: Input/.test(document.querySelector('.form-errors').innerText)"
    )
    assert "#/new" in page.url  # nothing was queued


def test_request_form_shows_progress_and_fills_the_surface(
    server: str, page: Any, artifacts_dir: Path, state: dict[str, Any]
) -> None:
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "1")
    page.fill("#f-nx", "7")
    page.fill("#f-ny", "7")
    page.fill("#f-label", "mlp-plain (browser test)")
    page.get_by_role("button", name="Compute surface").click()

    page.wait_for_url("**/#/surfaces/*")
    surface_id = page.url.rsplit("/", 1)[1]
    state["form_surface"] = surface_id
    progress = page.get_by_role("progressbar")
    progress.wait_for()
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
    assert _surface_shape(page, "#plot") == ["surface", 7, 7]
    assert page.locator("h1").inner_text() == "mlp-plain (browser test)"
    # Losses are drawn up to 10 (Li et al. 2018) unless the user sets a range; hover keeps truth.
    z_max, true_max, title = page.evaluate(
        """() => { const t = document.querySelector('#plot').data[0];
                   return [Math.max(...t.z.flat()), Math.max(...t.text.flat().map(Number)),
                           t.colorbar.title.text]; }"""
    )
    assert z_max <= 10
    if true_max > 10:
        assert z_max == 10 and "≤ 10" in title
    page.screenshot(path=str(artifacts_dir / "browser-surface.png"), full_page=True)

    # Contour and heatmap views of the same numbers, log scale, accuracy.
    page.locator("label", has_text="Heatmap").click()
    page.wait_for_function("() => document.querySelector('#plot').data[0].type === 'heatmap'")
    assert _surface_shape(page, "#plot") == ["heatmap", 7, 7]
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
    same eigenvalues and draws the |λmin/λmax| map (a 2×2 heatmap: a few seconds of CPU)."""
    if "form_surface" not in state:
        reply = _post_json(f"{server}/api/surfaces", {**SECOND_SURFACE, "model": "mlp-plain"})
        state["form_surface"] = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
        if reply["job"] and reply["job"]["status"] != "done":
            assert _wait_for_job(server, reply["job"]["id"]) == "done"
    surface_id = state["form_surface"]
    body = {"top": 1, "bottom": 1, "curvature_grid": 2, "train_size": 100}
    reply = _post_json(f"{server}/api/surfaces/{surface_id}/hessian", body)
    if reply["hessian"] is None:
        assert _wait_for_job(server, reply["job"]["id"]) == "done"
    hessian = _get_json(f"{server}/api/surfaces/{surface_id}")["hessian"]

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
    page.screenshot(path=str(artifacts_dir / "browser-curvature.png"), full_page=True)

    # The form: another analysis (two largest eigenvalues, no map) replaces the stored one.
    page.fill("#c-top", "2")
    page.fill("#c-bottom", "0")
    page.fill("#c-curvature_grid", "0")
    page.get_by_label("Estimate tr(H) (Hutchinson)").uncheck()
    page.get_by_label("Training samples").fill("100")
    panel.get_by_role("button", name="Compute curvature").click()
    panel.get_by_role("progressbar", name="Computing curvature").wait_for()
    panel.locator("dd[data-stat='top']").wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_selector(".plot-curvature", state="hidden")
    assert len(_get_json(f"{server}/api/surfaces/{surface_id}")["hessian"]["top_eigenvalues"]) == 2


def test_compare_view_links_two_real_surfaces(
    server: str, page: Any, artifacts_dir: Path, state: dict[str, Any]
) -> None:
    if "form_surface" not in state:
        reply = _post_json(f"{server}/api/surfaces", {**SECOND_SURFACE, "model": "mlp-plain"})
        state["form_surface"] = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
        if reply["job"]:
            assert _wait_for_job(server, reply["job"]["id"]) == "done"
    reply = _post_json(f"{server}/api/surfaces", SECOND_SURFACE)
    second = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"] and reply["job"]["status"] not in ("done",):
        assert _wait_for_job(server, reply["job"]["id"]) == "done"
    ids = [state["form_surface"], second]

    page.goto(f"{server}/#/compare/{','.join(ids)}")
    page.get_by_role("heading", level=1, name="Compare 2 surfaces").wait_for()
    page.wait_for_function(
        """() => { const plots = [...document.querySelectorAll('.plot-compare')];
                   return plots.length === 2 && plots.every(d => d.dataset.ready === 'true'
                     && d.data[0].z.every(r => r.every(v => v !== null))); }""",
        timeout=JOB_TIMEOUT_MS,
    )
    shapes = [_surface_shape(page, f".plot-compare[data-surface-id='{i}']") for i in ids]
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
    reply = _post_json(f"{server}/api/surfaces", SECOND_SURFACE)  # cached after the comparison
    surface_id = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"] and reply["job"]["status"] != "done":
        assert _wait_for_job(server, reply["job"]["id"]) == "done"

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
    assert all(s["id"] != surface_id for s in _get_json(f"{server}/api/surfaces"))


def test_narrow_screen_and_unknown_pages(server: str, browser: Any, artifacts_dir: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(f"{server}/#/new")
        page.get_by_role("heading", level=1, name="New surface").wait_for()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px wide)"
        page.screenshot(path=str(artifacts_dir / "browser-narrow-form.png"), full_page=True)
        page.goto(f"{server}/#/surfaces/0123456789abcdef")
        page.get_by_role("heading", level=1, name="Surface not found").wait_for()
        page.goto(f"{server}/#/nowhere")
        page.get_by_role("heading", level=1, name="Page not found").wait_for()
    finally:
        context.close()


def test_preset_opens_comparison_and_cancel_stops_both_jobs(
    server: str, page: Any, artifacts_dir: Path
) -> None:
    page.goto(f"{server}/#/")
    page.get_by_role("button", name="ResNet-20 vs ResNet-20 without shortcuts").click()
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
    jobs = _get_json(f"{server}/api/jobs")
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
    reply = _post_json(f"{server}/api/surfaces", body)
    surface_id = (reply["surface"] or {}).get("id") or reply["job"]["surface_id"]
    if reply["job"]:
        assert _wait_for_job(server, reply["job"]["id"]) == "done"
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
