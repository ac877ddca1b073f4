"""The reports page's family picker and a recurrent report's gradient through time, in a real
browser: the picker offers the server's four families (resnet, highway, transformer,
recurrent) and, on Start, asks first with the chosen family's pairs and estimated cost; a tiny
``recurrent`` report, once done, is listed with its recipe and opens as its offline page, whose
gradient-flow section draws ‖∂L/∂h_t‖ per time step (8 steps: the rows of a digits image) and
whose findings are the report JSON's. Every page fails its test on a request to any host but
the server and on any uncaught JavaScript error."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, get_json, post_json, wait_for_job  # noqa: E402

from landscape.report.recipe import FAMILIES  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

STEPS = 8  # time steps of a recurrent net on digits: the 8 rows of an 8×8 image
# A recurrent report sized for a 2-core CPU: one seed, one epoch, one 5×5 surface, hidden 8.
TINY_RECURRENT: dict[str, Any] = {
    "family": "recurrent",
    "seeds": [0],
    "epochs": 1,
    "train_size": 120,
    "test_size": 60,
    "ranges": [[0.25, 5]],
    "model_args": {"hidden": 8},
}


def pair_label(family: str) -> str:
    """The plan's label for a family's documented recipe (api/routes/jobs.py words it so)."""
    return "skip vs plain · " + ", ".join(f"{a}/{b}" for a, b in FAMILIES[family].pairs)


def fmt(value: Any, digits: int = 4) -> str:
    """As the report page formats a number (landscape/report/html.py ``_fmt``)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def test_family_picker_asks_with_each_familys_pairs_and_cost(server: str, page: Any) -> None:
    page.goto(f"{server}/#/reports")
    picker = page.locator("#report-family")
    picker.wait_for(state="visible")
    options = picker.locator("option")
    values = [options.nth(i).get_attribute("value") for i in range(options.count())]
    labels = [options.nth(i).inner_text().strip() for i in range(options.count())]
    # the page's list is the server's: the ReportRequest schema's family names
    schema = get_json(f"{server}/openapi.json")["components"]["schemas"]["ReportRequest"]
    assert values == ["resnet", "highway", "transformer", "recurrent"]
    assert values == schema["properties"]["family"]["enum"] == list(FAMILIES)
    assert picker.input_value() == "resnet"  # the server's default family comes first
    assert all(labels) and len(set(labels)) == len(labels)
    assert "lstm" in labels[3] and "gru" in labels[3] and "rnn" in labels[3]

    before = {r["id"] for r in get_json(f"{server}/api/reports")}
    for value, label in zip(values, labels, strict=True):
        picker.select_option(value)
        plan = post_json(f"{server}/api/jobs/estimate", {"reports": [{"family": value}]})
        [planned] = plan["jobs"]
        assert planned["label"] == pair_label(value)
        # new, or resume where an earlier test of this session cancelled the family's recipe;
        # either way the page asks first (cached or active would open without asking)
        assert planned["action"] in ("new", "resume"), planned
        page.locator("#start-report").click()
        dialog = page.locator("dialog.plan-dialog")
        dialog.wait_for(state="visible")
        assert label in dialog.locator("#plan-title").inner_text()
        row = dialog.locator(".plan-list li")
        assert row.count() == 1
        row_text = row.inner_text()
        assert pair_label(value) in row_text  # the family's pairs, as the server plans them
        seconds = planned["estimate"]["seconds"]
        assert seconds and seconds > 0
        took = page.evaluate(
            "async (s) => (await import('/static/js/dom.js')).fmtDuration(s)", seconds
        )
        summary = dialog.locator(".plan-summary").inner_text()
        if planned["action"] == "new":  # the family's cost
            assert f"new job: about {took} on this server" in row_text
            assert (
                summary == f"Starting queues 1 new job: about {took} of computing on this server."
            )
        else:
            assert f"resuming queues it again (about {took} on this server" in row_text
            assert row.locator("input[type=checkbox]").count() == 1
            assert summary == "Starting queues no new job."
        dialog.get_by_role("button", name="Don’t start").click()
        dialog.wait_for(state="detached")
        assert not page.locator("#start-report").is_disabled()
    assert {r["id"] for r in get_json(f"{server}/api/reports")} == before  # nothing queued


def test_recurrent_report_draws_the_gradient_through_time(server: str, page: Any) -> None:
    reply = post_json(f"{server}/api/reports", TINY_RECURRENT)
    report_id = reply["report"]["id"]
    if reply["job"] and reply["job"]["status"] != "done":
        assert wait_for_job(server, reply["job"]["id"]) == "done"
    report = get_json(f"{server}/api/reports/{report_id}")
    recipe = report["recipe"]
    pairs = [tuple(p) for p in recipe["pairs"]]
    assert pairs == list(FAMILIES["recurrent"].pairs)  # (lstm, rnn), (gru, rnn)

    # the list shows the report with its recipe and a link to its offline page
    page.goto(f"{server}/#/reports")
    item = page.locator(f"li.report[data-report='{report_id}']")
    item.wait_for(state="visible", timeout=JOB_TIMEOUT_MS)
    facts = item.locator("p").first.inner_text()
    assert "complete" in facts
    assert "lstm / rnn, gru / rnn · digits · 1 epochs · seeds 0" in facts
    link = item.locator(f"[data-report-link='{report_id}']")
    link.wait_for(state="visible")
    assert link.get_attribute("target") == "_blank"

    page.goto(server + link.get_attribute("href"))
    title = page.locator("h1").inner_text()
    assert title == "Identity paths vs plain twins (recurrent), measured"
    section = page.locator("section#gradient-flow")
    section.wait_for(state="visible")
    # per pair a plot over depth and one through time: 4 figures, each drawn by Plotly
    page.wait_for_function(
        "(n) => document.querySelectorAll('#gradient-flow .js-plotly-plot').length === n",
        arg=2 * len(pairs),
        timeout=JOB_TIMEOUT_MS,
    )
    figures = page.evaluate(
        """() => [...document.querySelectorAll('#gradient-flow .js-plotly-plot')].map((d) => ({
              title: d.layout.title.text, log: d.layout.yaxis.type, x: d.layout.xaxis.title.text,
              visible: d.getBoundingClientRect().height > 0,
              traces: d.data.map((t) => ({ name: t.name, x: t.x, y: t.y })) }))"""
    )
    through_time = {f["title"]: f for f in figures if f["title"].endswith(", through time")}
    assert sorted(through_time) == sorted(f"{a} vs {b}, through time" for a, b in pairs)
    seed = recipe["seeds"][0]
    for skip, plain in pairs:
        figure = through_time[f"{skip} vs {plain}, through time"]
        assert figure["visible"] and figure["log"] == "log" and figure["x"] == "step"
        # one trace per net and state (init, trained), each over the 8 time steps
        expected = [f"{model} {state}" for model in (skip, plain) for state in ("init", "trained")]
        assert [t["name"] for t in figure["traces"]] == expected
        for trace in figure["traces"]:
            model, state = trace["name"].split()
            stored = report["nets"][f"{model}/seed{seed}"]["gradient_flow"][state]
            assert trace["x"] == list(range(1, STEPS + 1))
            assert trace["y"] == pytest.approx(stored["time_grad_norm"])
            assert len(stored["time_grad_norm"]) == STEPS

    # the findings shown are the report JSON's
    findings = report["findings"]
    shown = page.locator("section#findings")
    shown.wait_for(state="visible")
    families = findings["families"]
    assert [r["family"] for r in families] == ["recurrent"] * len(pairs)
    verdicts = shown.locator("table").first.locator("tr")
    assert verdicts.count() == 1 + len(families)  # a header row and one row per pair
    for index, row in enumerate(families, start=1):
        cells = verdicts.nth(index).locator("th, td").all_inner_texts()
        assert cells[0] == "recurrent"
        assert cells[1] == f"{row['pair'][0]} vs {row['pair'][1]}"
        assert cells[2].startswith(f"{fmt(row['lower_loss'])} (")
        assert cells[3].endswith(f"over {row['gradient_over']}")
        for label, within in row["gradient_within_decade"].items():
            assert f"{label}: {fmt(within)} (" in cells[3]
        assert cells[4] == (
            f"{fmt(row['smoother'])} ({row['metrics_plain_rougher']} of {row['metrics_decided']})"
        )
        assert cells[5].startswith(f"{fmt(row.get('plain_sharpens_more'))} (")
    flow_rows = {
        texts[0]: texts[1:]
        for texts in (
            shown.locator("table").last.locator("tr").nth(i).locator("th, td").all_inner_texts()
            for i in range(1, shown.locator("table").last.locator("tr").count())
        )
    }
    assert sorted(flow_rows) == sorted(f["net"] for f in findings["gradient_flow"])
    for row in findings["gradient_flow"]:
        cells = flow_rows[row["net"]]
        assert cells[0].startswith(fmt(row["init"], 3))
        assert cells[1].startswith(fmt(row["trained"], 3))
        assert cells[2] == fmt(row.get("init_through_time"), 3) != "–"
        assert cells[3] == fmt(row.get("trained_through_time"), 3) != "–"
