"""The compare view with three surfaces (and two, for contrast) at a desktop and a narrower
window: the panels sit in one row or wrap cleanly (equal widths, no panel's plot shifted
against its row neighbours, nothing wider than the window) and every plot's titles are inside
its plot.

3D axis titles are drawn in the WebGL canvas, not the DOM: there the test looks at the
canvas's pixels, which must leave a blank border (anything cut by the canvas's edge touches
it). 2D titles (.xtitle, .ytitle, the colour bar's) are SVG and measured as boxes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.register_assert_rewrite("browser_support")  # before the import below

from browser_support import JOB_TIMEOUT_MS, SECOND_SURFACE, ensure_surface  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

TINY = {
    **SECOND_SURFACE,
    "model": "mlp-plain",
    "train": {"epochs": 1},
    "train_size": 200,
    "grid": {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-1, 1]},
}
# The middle label is long enough to wrap onto a second line in a third of the page: the
# plots must still start level with their neighbours'.
LABELS = [
    "plain MLP seed 0",
    "plain MLP, a second pair of random directions (seed 1)",
    "plain MLP seed 2",
]
SIZES = [(1280, 900), (1000, 800)]
TOLERANCE = 1.5  # px: sub-pixel widths of grid columns


@pytest.fixture(scope="module")
def three(server: str) -> list[str]:
    return [
        ensure_surface(
            server, {**TINY, "directions": {**TINY["directions"], "seed": seed}, "label": label}
        )
        for seed, label in enumerate(LABELS)
    ]


# Each plot's box, its Plotly size, its scene canvas and its SVG titles, in page pixels.
MEASURE = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top + scrollY, right: r.right, bottom: r.bottom + scrollY,
            width: r.width, height: r.height}; };
  return {
    viewport: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    panels: [...document.querySelectorAll('.compare-grid > .panel')].map(box),
    plots: [...document.querySelectorAll('.plot-compare')].map((d) => ({
      box: box(d),
      type: d.data[0].type,
      layoutSize: [d._fullLayout.width, d._fullLayout.height],
      canvases: [...d.querySelectorAll('.gl-container canvas')].map(box),
      titles: [...d.querySelectorAll('.xtitle, .ytitle, .cbtitle text, .colorbar')]
        .filter((t) => t.getBoundingClientRect().width > 0)
        .map((t) => ({name: t.getAttribute('class'), text: t.textContent, ...box(t)})),
    })),
  };
}"""

SETTLED = """(view) => {
  const plots = [...document.querySelectorAll('.plot-compare')];
  return plots.length > 0 && plots.every((d) => d.dataset.ready === 'true' && d.data
    && d.data[0].type === view && d._fullLayout
    && Math.abs(d._fullLayout.width - d.clientWidth) < 1.5
    && Math.abs(d._fullLayout.height - d.clientHeight) < 1.5);
}"""


def _open(page: Any, server: str, ids: list[str]) -> None:
    page.goto(f"{server}/#/compare/{','.join(ids)}")
    page.get_by_role("heading", level=1, name=f"Compare {len(ids)} surfaces").wait_for()
    # Drawn, and drawn at the size the page gave the plot (not a stale one from before the
    # panels were laid out).
    view = page.evaluate(
        "() => (document.createElement('canvas').getContext('webgl') ? 'surface' : 'contour')"
    )
    page.wait_for_function(SETTLED, arg=view, timeout=JOB_TIMEOUT_MS)


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = TOLERANCE) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["top"] >= outer["top"] - slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def _check_layout(m: dict[str, Any], n: int, where: str) -> None:
    assert len(m["panels"]) == n and len(m["plots"]) == n, where
    assert m["scrollWidth"] <= m["viewport"], f"{where}: the page scrolls sideways"
    for k, plot in enumerate(m["plots"]):
        b = plot["box"]
        assert b["left"] >= 0 and b["right"] <= m["viewport"], f"{where}: plot {k} overflows {b}"
        assert _inside(b, m["panels"][k]), f"{where}: plot {k} leaves its panel"
        # Plotly drew at the div's size (else it overflows it or leaves a gap).
        assert abs(plot["layoutSize"][0] - b["width"]) <= TOLERANCE, (
            where,
            k,
            plot["layoutSize"],
            b,
        )
    # Rows: panels with the same top. All panels one width; in each row the plots start at
    # the same height (a title wrapping in one panel must not push its plot down).
    widths = [p["width"] for p in m["panels"]]
    assert max(widths) - min(widths) <= TOLERANCE, f"{where}: unequal panel widths {widths}"
    rows: dict[int, list[int]] = {}
    for k, p in enumerate(m["panels"]):
        rows.setdefault(round(p["top"]), []).append(k)
    for members in rows.values():
        tops = [m["plots"][k]["box"]["top"] for k in members]
        assert max(tops) - min(tops) <= TOLERANCE, f"{where}: plots shifted in a row: {tops}"
        heights = [m["plots"][k]["box"]["height"] for k in members]
        assert max(heights) - min(heights) <= TOLERANCE, f"{where}: plot heights {heights}"
    counts = [len(v) for _, v in sorted(rows.items())]
    assert all(c == counts[0] for c in counts[:-1]) and counts[-1] <= counts[0], (where, counts)


def _blank_border(png: bytes, edge: int = 2) -> dict[str, bool]:
    """Which edges of a canvas screenshot are free of ink (text, lines, the surface)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    background = pixels[0, 0]  # the scene has no background of its own: the panel's
    ink = np.abs(pixels - background).max(axis=2) > 80  # light grid lines are not ink
    return {
        "left": not ink[:, :edge].any(),
        "right": not ink[:, -edge:].any(),
        "top": not ink[:edge, :].any(),
        "bottom": not ink[-edge:, :].any(),
    }


@pytest.mark.parametrize("count", [3, 2])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare_panels_align_and_titles_fit(
    server: str,
    open_page: Any,
    three: list[str],
    count: int,
    size: tuple[int, int],
    artifacts_dir: Path,
) -> None:
    ids = three[:count]
    page = open_page(*size)
    _open(page, server, ids)
    where = f"{count} surfaces at {size[0]}×{size[1]}"
    measured = page.evaluate(MEASURE)
    _check_layout(measured, count, where)
    page.screenshot(path=str(artifacts_dir / f"compare-{count}-{size[0]}.png"), full_page=True)

    if measured["plots"][0]["type"] == "surface":
        # 3D: one canvas per scene, inside its plot, with nothing cut at its edges.
        for k, plot in enumerate(measured["plots"]):
            assert len(plot["canvases"]) >= 1, (where, k)
            for canvas in plot["canvases"]:
                assert _inside(canvas, plot["box"]), f"{where}: scene {k} leaves its plot"
            for title in plot["titles"]:  # the colour bar and its title (SVG)
                assert _inside(title, plot["box"]), f"{where}: plot {k}: {title}"
            shot = page.locator(".plot-compare").nth(k).locator(".gl-container canvas").first
            edges = _blank_border(shot.screenshot())
            assert all(edges.values()), f"{where}: scene {k} is cut at its edges: {edges}"
        page.get_by_text("Contour", exact=True).click()
        page.wait_for_function(SETTLED, arg="contour")
        measured = page.evaluate(MEASURE)
        _check_layout(measured, count, f"{where}, contours")

    # 2D: every axis and colour-bar title inside its plot.
    for k, plot in enumerate(measured["plots"]):
        names = {t["name"] for t in plot["titles"]}
        assert {"xtitle", "ytitle"} <= names, (where, k, names)
        for title in plot["titles"]:
            assert _inside(title, plot["box"]), f"{where}, contours: plot {k}: {title}"
    page.screenshot(
        path=str(artifacts_dir / f"compare-{count}-{size[0]}-contour.png"), full_page=True
    )
