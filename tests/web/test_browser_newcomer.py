"""A newcomer's first hour, in a real browser: a preset says what it would queue and asks
(cancelled surfaces are offered for resume, never restarted silently); a cancelled surface
keeps its gallery card with Resume; the queue says where a job stands; the request form's
hint matches the directions chosen; /help/metrics renders and navigates; the surface page's
explanations have room; a saved PNG is named after its surface.
"""

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
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

# Slow enough (30 epochs on the whole training split) to be cancelled while it trains; at the
# default learning rate (0.1) some seeds diverge within a few epochs, and a diverged job ends
# failed before its cancel is seen.
SLOW_TRAINING: dict[str, Any] = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 30, "lr": 0.02},
    "grid": {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-1, 1]},
    "label": "cancelled while training (browser test)",
}


def _delete(url: str) -> Any:
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _cancelled(server: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` and cancel its job at once; the cancelled job."""
    job = post_json(f"{server}/api/surfaces", body)["job"]
    _delete(f"{server}/api/jobs/{job['id']}")
    cancelled = get_json(f"{server}/api/jobs/{job['id']}")
    assert cancelled["status"] == "cancelled", cancelled
    return dict(cancelled)


def test_a_preset_says_what_it_would_queue_and_asks_first(page: Any, server: str) -> None:
    preset = next(p for p in get_json(f"{server}/api/config")["presets"] if p["id"] == "resnet56")
    cancelled = _cancelled(server, preset["requests"][0])
    page.goto(f"{server}/")
    page.click("button[data-preset='resnet56']")
    dialog = page.locator("dialog.plan-dialog")
    dialog.wait_for()
    resume = dialog.locator("li[data-action='resume']")
    assert resume.count() == 1 and "cancelled after 0 of 441 points" in resume.inner_text()
    assert not resume.locator("input[type='checkbox']").is_checked()  # never resumed unasked
    fresh = dialog.locator("li[data-action='new']")
    assert fresh.count() == 1 and "new job: about" in fresh.inner_text()
    assert "on this server" in fresh.inner_text()
    assert "Starting queues 1 new job" in dialog.locator(".plan-summary").inner_text()
    assert "FLOP/s" in dialog.inner_text()  # the rate the estimate rests on
    dialog.get_by_role("button", name="Don’t start").click()
    assert page.locator("dialog.plan-dialog").count() == 0
    jobs = get_json(f"{server}/api/jobs")
    preset_labels = {r["label"] for r in preset["requests"]}
    active = [
        j for j in jobs if j["label"] in preset_labels and j["status"] in ("queued", "running")
    ]
    assert active == []  # declining queued nothing, and the cancelled one stayed cancelled
    assert get_json(f"{server}/api/jobs/{cancelled['id']}")["status"] == "cancelled"


def test_a_cancelled_surface_keeps_its_card_with_resume(page: Any, server: str) -> None:
    cancelled = _cancelled(server, SLOW_TRAINING)
    surface_id = cancelled["surface_id"]
    page.goto(f"{server}/")
    card = page.locator(f"article.card[data-id='{surface_id}']")
    card.wait_for()
    assert card.locator(".badge").inner_text() == "cancelled"
    card.get_by_role("button", name="Resume").click()
    page.wait_for_url(f"**/#/surfaces/{surface_id}")
    resumed = [
        j for j in get_json(f"{server}/api/jobs") if j["surface_id"] == surface_id
    ]  # newest first
    assert resumed[0]["id"] != cancelled["id"]
    assert resumed[0]["status"] in ("queued", "running", "done")
    _delete(f"{server}/api/jobs/{resumed[0]['id']}")


def test_the_queue_words_come_from_the_servers_estimate(page: Any, server: str) -> None:
    plan = post_json(f"{server}/api/jobs/estimate", {"surfaces": [SECOND_SURFACE]})
    (item,) = plan["jobs"]
    if item["action"] == "cached":
        pytest.skip("the surface was computed by another test of this session")
    page.goto(f"{server}/")
    words = page.evaluate(
        """async (estimate) => {
             const jobs = await import('/static/js/jobs.js');
             return jobs.queueWords({ status: 'queued', estimate });
           }""",
        item["estimate"],
    )
    assert words.startswith(f"position {item['estimate']['position']} in the queue")
    assert "express lane" in words  # a tiny job has a lane of its own


def test_the_direction_hint_matches_the_choice(page: Any, server: str) -> None:
    page.goto(f"{server}/#/new")
    hint = page.locator("#f-direction-kind-hint")
    hint.wait_for()
    assert hint.inner_text().startswith("Random") and "PCA" not in hint.inner_text()
    page.select_option("#f-direction-kind", "pca")
    assert hint.inner_text().startswith("PCA")


def test_the_metrics_help_renders_links_and_navigates(page: Any, server: str) -> None:
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(f"{server}/help/metrics")
    text = page.locator("main").inner_text()
    assert "*Findings*" not in text and page.locator("main em", has_text="Findings").count() == 1
    reference = page.locator("main a[href='#ref-li2018']").first
    reference.click()
    assert (
        page.locator("#ref-li2018").is_visible()
        and "arxiv.org" in page.locator("#ref-li2018").inner_text()
    )
    nav = page.get_by_role("navigation", name="On this page")
    assert nav.locator("a[href='#sharpness']").count() == 1
    assert nav.get_by_role("link", name="← Back to the surfaces").count() == 1
    with urllib.request.urlopen(f"{server}/favicon.ico", timeout=5) as response:
        assert response.status == 200
    assert missing == []


def test_explanations_have_room_and_the_png_is_named(page: Any, server: str) -> None:
    surface_id = ensure_surface(server, SECOND_SURFACE)
    page.goto(f"{server}/#/surfaces/{surface_id}")
    meaning = page.locator(".stats-box .meaning").first
    meaning.wait_for()
    box = page.locator(".stats-box").bounding_box()
    width = meaning.bounding_box()["width"]
    assert width > 0.7 * box["width"], (width, box)  # not a two-word column
    with page.expect_download() as download:
        page.get_by_role("button", name="PNG", exact=True).click()
    name = download.value.suggested_filename
    assert name.startswith("mlp-residual-browser-test-") and name.endswith(".png")
    page.goto(f"{server}/")
    stats = page.locator(f"article.card[data-id='{surface_id}'] .card-stats dd")
    stats.first.wait_for()
    sharpness = page.locator(
        f"article.card[data-id='{surface_id}'] .card-stats dt", has_text="sharpness"
    )
    if sharpness.count():
        assert sharpness.locator("xpath=following-sibling::dd[1]").inner_text().endswith("%")
