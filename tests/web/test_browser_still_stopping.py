"""A request refused with 409 because its id's previous job is still stopping after a cancel
(``Retry-After`` set, ``tests/api/test_queue_clients.py``): the page shows the server's words,
sends the request again by itself after the wait, and when the job still has not stopped says
so and leaves the button to try again, never failing silently or with a generic error.

The 409 is the API's own answer, replayed by request interception: a job that takes longer to
stop than the server's own wait cannot be made on demand.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

DYING = "0ddba11"
DETAIL = (
    f"job {DYING} for this id is still stopping after a cancel; request it again in a few seconds"
)
TRIES = 3  # STOPPING_TRIES in web/js/api.js


def _refuse(route: Any) -> None:
    route.fulfill(
        status=409,
        content_type="application/json",
        headers={"Retry-After": "1"},
        body=json.dumps({"detail": DETAIL}),
    )


def _fill_tiny_form(page: Any, server: str, label: str) -> None:
    page.goto(f"{server}/#/new")
    page.locator("#f-model option[value='mlp-plain']").wait_for(state="attached")
    page.select_option("#f-model", "mlp-plain")
    page.fill("#f-epochs", "1")
    page.fill("#f-nx", "5")
    page.fill("#f-ny", "5")
    page.fill("#f-label", label)


def test_the_form_says_the_job_is_stopping_and_sends_again(page: Any, server: str) -> None:
    posts: list[str] = []

    def first_refused(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        posts.append(route.request.post_data or "")
        if len(posts) == 1:
            _refuse(route)
        else:
            route.continue_()  # the real server queues it

    page.route(f"{server}/api/surfaces", first_refused)
    _fill_tiny_form(page, server, "still stopping (browser test)")
    page.get_by_role("button", name="Compute surface").click()
    notice = page.locator(".notice-info")
    notice.wait_for()
    words = notice.inner_text()
    assert f"Job {DYING} for this id is still stopping after a cancel" in words, words
    assert "tries again by itself in 1 s (try 2 of 3)" in words, words
    page.wait_for_url("**/#/surfaces/*", timeout=JOB_TIMEOUT_MS)
    assert len(posts) == 2 and posts[0] == posts[1]  # the same request, sent again
    assert page.locator(".notice").is_hidden()
    _cancel_jobs_of(server, page.url.rsplit("/", 1)[1])


def test_a_job_that_will_not_stop_leaves_the_words_and_the_button(page: Any, server: str) -> None:
    posts: list[str] = []

    def always_refused(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        posts.append(route.request.post_data or "")
        _refuse(route)

    page.route(f"{server}/api/surfaces", always_refused)
    _fill_tiny_form(page, server, "never stops (browser test)")
    submit = page.get_by_role("button", name="Compute surface")
    submit.click()
    page.locator(".notice-info").wait_for()
    page.get_by_role("button", name="Waiting for the cancelled job to stop…").wait_for()
    errors = page.locator(".form-errors")
    errors.wait_for()
    text = errors.inner_text()
    assert DETAIL in text and "Press “Compute surface” to try again" in text, text
    assert len(posts) == TRIES
    assert submit.is_enabled() and "#/new" in page.url
    assert page.locator(".notice").is_hidden()


def _cancel_jobs_of(server: str, surface_id: str) -> None:
    """The retried job is real: cancel it, so the shared server is free for the next test."""
    with urllib.request.urlopen(f"{server}/api/jobs", timeout=10) as response:
        jobs = json.load(response)
    for job in jobs:
        if job.get("surface_id") == surface_id and job["status"] in ("queued", "running"):
            request = urllib.request.Request(f"{server}/api/jobs/{job['id']}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()


def test_resume_in_the_gallery_says_the_job_is_stopping(page: Any, server: str) -> None:
    """Resume right after a cancel: the gallery's card for the cancelled job."""
    surface_id = "5709aa"
    cancelled = {
        "id": DYING, "kind": "surface", "status": "cancelled", "stage": "computing",
        "progress": {"done": 3, "total": 25}, "surface_id": surface_id,
        "label": "stopping card (browser test)", "cancel_requested": True,
        "request": {"model": "mlp-plain", "dataset": "digits", "train": {"epochs": 1},
                    "grid": {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-1, 1]}},
    }  # fmt: skip
    posts: list[str] = []

    def surfaces(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        posts.append(route.request.post_data or "")
        _refuse(route)

    page.route(
        f"{server}/api/jobs*",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps([cancelled])
        ),
    )
    page.route(f"{server}/api/surfaces", surfaces)
    page.goto(f"{server}/")
    resume = page.locator(f'button[data-resume="{surface_id}"]')
    resume.click()
    notice = page.locator(".notice-info")
    notice.wait_for()
    assert "still stopping after a cancel" in notice.inner_text()
    page.locator(".notice-error").wait_for()
    text = page.locator(".notice-error").inner_text()
    assert f"Could not resume “stopping card (browser test)”: {DETAIL}" in text, text
    assert resume.is_enabled() and len(posts) == TRIES
    assert json.loads(posts[0]) == cancelled["request"]
