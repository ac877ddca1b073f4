"""The Python figures follow figure.js's scale rules: ``scale_for`` against ``scaleFor`` run by
Node on the same cases, the figures' clamp and titles against figure.js's ``figure``, and the
constants read from figure.js against what the module exports."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from landscape.plot import scale as scale_module
from landscape.plot.figures import comparison_figure, surface_figure
from landscape.plot.html import surface_data
from landscape.plot.scale import (
    CAPPED_COLOR,
    FIGURE_JS,
    LOG_DECADES,
    LOSS_CAP,
    VIRIDIS,
    FigureJsError,
    cap_note,
    colorscale,
    scale_for,
    short,
    value_title,
)
from landscape.specs import GridSpec, SurfaceSpec
from landscape.storage import Surface, grid_coordinates

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="node is not on PATH: comparing with figure.js needs Node >= 18"
)

# Reads one JSON request on stdin ("inf"/"-inf" stand for the infinities JSON cannot hold),
# answers with figure.js's own results.
_NODE_SCRIPT = """
import { readFileSync } from "node:fs";
const fig = await import(process.env.FIGURE_JS_URL);
const revive = (k, v) => (v === "inf" ? Infinity : v === "-inf" ? -Infinity : v);
const req = JSON.parse(readFileSync(0, "utf8"), revive);
const wrap = (metric) => (it) => (Array.isArray(it) ? { values: { [metric]: it } } : it);
const out = {
  constants: { LOSS_CAP: fig.LOSS_CAP, LOG_DECADES: fig.LOG_DECADES,
               CAPPED_COLOR: fig.CAPPED_COLOR, VIRIDIS: fig.VIRIDIS },
  scales: (req.scales || []).map(({ metric, items, log, range }) => {
    const scale = fig.scaleFor(items.map(wrap(metric)), metric, { log, range });
    return { scale, title: fig.valueTitle(metric, scale),
             colorscale: fig.colorscale(scale.capped), note: fig.capNote(scale) };
  }),
  short: (req.short || []).map((v) => fig.short(v)),
  figures: (req.figures || []).map(({ surface, metric }) => fig.figure(surface, { metric })),
};
process.stdout.write(JSON.stringify(out));
"""


def _figure_js(request: dict[str, Any]) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", _NODE_SCRIPT],
        input=json.dumps(request, allow_nan=False),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIGURE_JS_URL": FIGURE_JS.as_uri()},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _to_json(value: Any) -> Any:
    """NaN → null (a gap, as the page gets it), ±inf → the sentinel the script revives."""
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


NAN, INF = math.nan, math.inf
WIDE = [[1e-3, 1e-2, 1e-1], [1.0, 1e2, 1e3]]
OVER = [[1.0, 2.0, 5.0], [12.0, 30.0, 50.0]]  # above 10, under two decades: linear, clamped
Range = tuple[float | None, float | None]
Case = tuple[str, str, list[Any], bool | None, Range]


def _case(
    name: str, metric: str, *items: Any, log: bool | None = None, user: Range = (None, None)
) -> Case:
    """items: value arrays, or ``{"values": ...}`` dicts as the API's surfaces."""
    return name, metric, list(items), log, user


CASES = [
    _case("tiny losses", "train_loss", [[1e-4, 2e-4], [3e-4, 5e-4]]),
    _case("1e-3..1e3: log", "train_loss", WIDE),
    _case("1e-3..1e3 forced linear", "train_loss", WIDE, log=False),
    _case("over 10: clamped", "train_loss", OVER),
    _case("over 10 forced log", "test_loss", OVER, log=True),
    _case("all above the cap", "train_loss", [[20.0, 25.0], [30.0, 21.0]]),
    _case("exactly two decades", "train_loss", [1.0, 10.0, 100.0]),
    _case("just under two decades", "train_loss", [1.0, 10.0, 99.0]),
    _case("accuracies never log", "train_acc", [[0.001, 0.5], [0.9, 0.99]]),
    _case("accuracy forced log", "test_acc", [[0.001, 0.5], [0.9, 0.99]], log=True),
    _case("accuracy above the cap", "train_acc", [5.0, 50.0]),
    _case("NaN gaps", "train_loss", [[NAN, 1e-3], [1e3, NAN]]),
    _case("nothing computed", "train_loss", [[NAN, NAN], [NAN, NAN]]),
    _case("infinities dropped", "train_loss", [INF, 1.0, 2.0, -INF]),
    _case("zeros: not positive", "train_loss", [0.0, 1.0, 1000.0]),
    _case("zeros forced log", "train_loss", [0.0, 1.0, 1000.0], log=True),
    _case("negatives", "train_loss", [-1.0, 5.0, 40.0]),
    _case("user range, linear", "train_loss", OVER, user=(0.0, 5.0)),
    _case("user low only: still clamped", "train_loss", OVER, user=(2.0, None)),
    _case("user low above the cap", "train_loss", OVER, user=(20.0, None)),
    _case("user high only", "train_loss", OVER, log=False, user=(None, 40.0)),
    _case("user range, log", "train_loss", WIDE, user=(1e-2, 1e2)),
    _case("user range <= 0 on log", "train_loss", WIDE, user=(0.0, -1.0)),
    _case("shared: one wide, one narrow", "train_loss", [[1.0, 5.0]], [[1e-3, 1.0]]),
    _case("shared: one over the cap", "train_loss", [[1.0, 5.0]], [[2.0, 40.0]]),
    _case("a surface lacking the metric", "train_loss", {"values": {}}, [[2.0, 40.0]]),
    _case("no surfaces", "train_loss"),
    _case("not a loss name", "train_loss_ema", WIDE),
]


def _python_items(items: list[Any]) -> list[Any]:
    return [it if isinstance(it, dict) else np.asarray(it, dtype=float) for it in items]


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@needs_node
def test_scale_for_agrees_with_figure_js() -> None:
    request = {
        "scales": [
            {"metric": m, "items": _to_json(items), "log": log, "range": list(r)}
            for _, m, items, log, r in CASES
        ]
    }
    answers = _figure_js(request)["scales"]
    for (name, metric, items, log, user_range), js in zip(CASES, answers, strict=True):
        scale = scale_for(_python_items(items), metric, log=log, range=user_range)
        want = js["scale"]
        assert scale.log is want["log"], name
        assert scale.capped is want["capped"], name
        for field in ("min", "max"):
            assert _same(getattr(scale, field), want[field]), (name, field, scale, want)
        for got, expected in zip(scale.range, want["range"], strict=True):
            assert _same(got, expected), (name, scale.range, want["range"])
        assert value_title(metric, scale) == js["title"], name
        assert colorscale(scale.capped) == js["colorscale"], name
        assert cap_note(scale) == js["note"], name


@needs_node
def test_short_numbers_agree_with_figure_js() -> None:
    """``short`` writes the max in the clamp note: JS rounds ties away from zero."""
    numbers = [0.0, 1.1e9, 0.0123, 12.345, 1.0625, 10.0, -2.5e-5, 9999.95, 1e-3, 1e4, 123456.0]
    numbers += [0.00099999, 99999.0, 0.5, -3.0, 2.5e-7, 1e21, NAN]
    got = [short(None if math.isnan(v) else v) for v in numbers]
    assert got == _figure_js({"short": _to_json(numbers)})["short"]


def test_scale_constants_come_from_figure_js() -> None:
    source = FIGURE_JS.read_text(encoding="utf-8")
    assert f"export const LOSS_CAP = {LOSS_CAP:g};" in source
    assert f"export const LOG_DECADES = {LOG_DECADES:g};" in source
    assert f'export const CAPPED_COLOR = "{CAPPED_COLOR}";' in source
    with pytest.raises(FigureJsError, match="export const LOSS_CAP"):
        scale_module._js_constant("const LOSS_CAP = 10;", "LOSS_CAP")  # not exported
    with pytest.raises(FigureJsError, match="plain literal"):
        scale_module._js_constant("export const LOSS_CAP = 5 * 2;", "LOSS_CAP")


@needs_node
def test_parsed_constants_equal_the_modules_exports() -> None:
    js = _figure_js({})["constants"]
    assert [js["LOSS_CAP"], js["LOG_DECADES"], js["CAPPED_COLOR"]] == [
        LOSS_CAP,
        LOG_DECADES,
        CAPPED_COLOR,
    ]
    assert [list(c) for c in VIRIDIS] == js["VIRIDIS"]


def _surface(loss: np.ndarray, *, ny: int | None = 3) -> Surface:
    nx = loss.shape[-1]
    grid = (
        GridSpec(n_x=nx, n_y=ny, y_range=(-0.5, 0.5))
        if ny
        else GridSpec(n_x=nx, n_y=None, y_range=None)
    )
    x, y = grid_coordinates(grid)
    return Surface(
        spec=SurfaceSpec(checkpoint="c.pt", grid=grid),
        status="complete",
        x=x,
        y=y,
        values={"train_loss": loss, "train_acc": np.full_like(loss, 0.5)},
        attrs={"model": "toy"},
    )


def _over_cap() -> np.ndarray:
    """Losses 1..40 (under two decades: linear by default), one gap."""
    loss = np.array([[1.0, 2.0, 4.0, 8.0], [3.0, 12.0, 20.0, 40.0], [1.5, 2.5, 9.0, NAN]])
    return loss


def test_default_figure_clamps_losses_above_the_cap() -> None:
    surface = _surface(_over_cap())
    fig = surface_figure(surface)  # the default: as the page decides
    surface_trace, contour = fig.data[:2]
    z = np.asarray(surface_trace.z, dtype=float)
    assert np.nanmax(z) == LOSS_CAP and np.isnan(z[2, 3])
    np.testing.assert_array_equal(z[0], surface.values["train_loss"][0])  # below: untouched
    assert (surface_trace.cmin, surface_trace.cmax) == (1.0, LOSS_CAP)
    assert contour.colorbar.title.text == "train loss (clamped at 10)"
    assert fig.layout.scene.zaxis.title.text == "train loss (clamped at 10)"
    assert [list(s) for s in surface_trace.colorscale][-1] == [1, CAPPED_COLOR]
    assert "grey: values above 10 drawn at 10 — max 40" in fig.layout.title.text
    assert surface_trace.text[1][3] == "40"  # hover keeps the true value

    linear = surface_figure(surface, log=False)  # forced: the same (linear is the default here)
    np.testing.assert_array_equal(np.asarray(linear.data[0].z, dtype=float), z)
    logged = surface_figure(surface, log=True)
    assert logged.data[1].colorbar.title.text == "train loss (log scale)"
    assert np.nanmax(np.asarray(logged.data[0].z, dtype=float)) == pytest.approx(math.log10(40))


def test_default_figure_picks_log_for_losses_spanning_decades() -> None:
    loss = np.array([[1e-3, 1e-2, 1e-1], [1.0, 10.0, 100.0], [2.0, 3.0, 1e3]])
    fig = surface_figure(_surface(loss))
    assert fig.data[1].colorbar.title.text == "train loss (log scale)"
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), np.log10(loss))
    # seven decades: every other one labelled (about six labels at most), in true units
    assert list(fig.data[1].colorbar.tickvals) == [-3, -1, 1, 3]
    assert list(fig.data[1].colorbar.ticktext) == ["0.001", "0.1", "10", "1000"]
    linear = surface_figure(_surface(loss), log=False)  # forced linear: clamped instead
    assert np.nanmax(np.asarray(linear.data[0].z, dtype=float)) == LOSS_CAP


@needs_node
@pytest.mark.parametrize("case", ["clamped 2D", "log 2D", "clamped 1D"])
def test_figure_draws_what_figure_js_draws(case: str) -> None:
    """The same z, colour scale, range, value title and clamp note as figure.js's ``figure``
    over the surface's numbers as the page gets them (5 significant digits)."""
    if case == "clamped 2D":
        surface = _surface(_over_cap())
    elif case == "log 2D":
        surface = _surface(np.array([[1e-3, 1e-2, 0.5], [1.0, 10.0, 100.0], [2.0, 3.0, 1e3]]))
    else:
        surface = _surface(np.array([0.5, 2.0, 11.0, 60.0, NAN, 3.0]), ny=None)
    fig = surface_figure(surface)
    js = _figure_js({"figures": [{"surface": surface_data(surface), "metric": "train_loss"}]})
    js_fig = js["figures"][0]
    trace, js_trace = fig.data[0], js_fig["data"][0]
    if surface.y is None:
        got = np.asarray(trace.y, dtype=float)
        want = np.asarray(js_trace["y"], dtype=float)
        assert fig.layout.yaxis.title.text == js_fig["layout"]["yaxis"]["title"]["text"]
        assert fig.layout.yaxis.type == js_fig["layout"]["yaxis"]["type"]
    else:
        got = np.asarray(trace.z, dtype=float)
        want = np.asarray(js_trace["z"], dtype=float)
        colorbar = js_trace["colorbar"]
        assert fig.data[1].colorbar.title.text == colorbar["title"]["text"]
        assert [list(s) for s in trace.colorscale] == js_trace["colorscale"]
        assert (trace.cmin, trace.cmax) == pytest.approx((js_trace["cmin"], js_trace["cmax"]))
        for key in ("tickvals", "ticktext"):
            mine = fig.data[1].colorbar[key]
            assert (list(mine) if mine is not None else None) == colorbar.get(key)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-4)
    notes = [a["text"] for a in js_fig["layout"]["annotations"]]
    if notes:
        assert notes[0] in fig.layout.title.text
    else:
        assert "grey" not in fig.layout.title.text


def test_comparison_shares_one_scale_as_the_compare_view() -> None:
    """One surface spanning decades makes both log; one over the cap clamps both."""
    narrow = _surface(np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0]]))
    wide = _surface(np.array([[1e-3, 1e-2, 0.1], [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))
    fig = comparison_figure([narrow, wide])
    shared = scale_for([narrow, wide], "train_loss")
    assert shared.log and fig.data[1].colorbar.title.text == "train loss (log scale)"
    for trace in fig.data:
        assert (trace.cmin, trace.cmax) == shared.range
    high = _surface(np.array([[1.0, 2.0, 3.0], [2.0, 30.0, 4.0], [3.0, 4.0, 5.0]]))
    fig = comparison_figure([narrow, high])
    assert [float(np.nanmax(np.asarray(t.z, dtype=float))) for t in fig.data] == [5.0, LOSS_CAP]
    assert fig.layout.scene.zaxis.title.text == "train loss (clamped at 10)"
    assert list(fig.layout.scene2.zaxis.range) == [1.0, LOSS_CAP]


def test_scale_module_and_package_stay_free_of_plotly() -> None:
    code = (
        "import sys, landscape.plot, landscape.plot.scale, landscape.plot.vtp\n"
        "assert landscape.plot.scale_for is landscape.plot.scale.scale_for\n"
        "assert landscape.plot.export_vtp is landscape.plot.vtp.export_vtp\n"
        "assert 'plotly' not in sys.modules, 'plotly imported'\n"
        "from landscape.plot import surface_figure, write_html\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
