"""A surface's state is shown from one source in a real browser: while its job runs and as it
finishes, the badge, the progress bar and the numbers' point count never disagree (no
"Complete" beside a "partial" badge or an older count), recorded at every DOM change."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, SECOND_SURFACE, post_json  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

# Its own training seed: the model trains first, so the page is open before the points come.
SURFACE = {
    **SECOND_SURFACE,
    "train": {"epochs": 1, "seed": 11},
    "grid": {"nx": 7, "ny": 7, "xrange": [-1, 1], "yrange": [-1, 1]},
    "label": "residual MLP (one state)",
}
# Every change of the page, as the user could see it: badge, progress line, points row.
RECORD = """
window.__states = [];
const text = (sel) => document.querySelector(sel)?.textContent.trim() ?? null;
new MutationObserver(() => window.__states.push({
  badge: text('.view-header .meta .badge'),
  progress: text('.progress-text'),
  points: text('dd[data-stat=points]'),
})).observe(document, { subtree: true, childList: true, characterData: true });
"""


def test_badge_progress_and_numbers_agree_while_a_surface_finishes(server: str, page: Any) -> None:
    page.add_init_script(RECORD)
    reply = post_json(f"{server}/api/surfaces", SURFACE)
    assert reply["job"] and reply["surface"] is None
    page.goto(f"{server}/#/surfaces/{reply['job']['surface_id']}")
    page.wait_for_function(
        "() => document.querySelector('.view-header .meta .badge')?.textContent === 'complete'"
        " && /^Complete/.test(document.querySelector('.progress-text')?.textContent)",
        timeout=JOB_TIMEOUT_MS,
    )
    states = page.evaluate("() => window.__states")
    computing = 0
    for state in states:
        badge, progress, points = state["badge"], state["progress"], state["points"]
        if badge is None or progress is None:
            continue
        complete = progress.startswith("Complete")
        assert complete == (badge == "complete"), state
        if complete:
            assert progress == "Complete: 49 of 49 points." and points == "49 of 49", state
        elif match := re.search(r"— (\d+) of 49 points", progress):
            computing += 1
            assert points in (None, f"{match.group(1)} of 49"), state
    assert computing, f"the page never saw the job computing: {states[-3:]}"
    assert (states[-1]["badge"], states[-1]["points"]) == ("complete", "49 of 49")
