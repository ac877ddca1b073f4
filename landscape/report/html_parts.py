"""The report page's building blocks: escaping and number formatting, the figure collector
(``Figures``: a ``<div>`` per figure, drawn by one script block each), log10 grids, and which
nets of a report were measured (a diverged net has no measurements)."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return esc(value)


class Figures:
    """Collects ``<div>`` placeholders and the script lines that draw them."""

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def div(self, data: list[dict[str, Any]], layout: dict[str, Any], height: int = 360) -> str:
        index = len(self.scripts)
        payload = json.dumps({"data": data, "layout": {"height": height, **layout}})
        payload = payload.replace("</", "<\\/")
        self.scripts.append(  # the figure's JSON once, in a block of its own
            f"{{const f = {payload}; Plotly.newPlot('fig{index}', f.data, f.layout, "
            "{responsive: true, displaylogo: false});}"
        )
        return f'<div class="fig" id="fig{index}"></div>'


def log10_rows(values: Any) -> list[list[float | None]]:
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(v)
    return [[float(a) if np.isfinite(a) else None for a in row] for row in np.atleast_2d(out)]


def pair_nets(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(skip model, plain model, key of skip net, key of plain net) per pair, first seed."""
    seed = report["recipe"]["seeds"][0]
    return [(a, b, f"{a}/seed{seed}", f"{b}/seed{seed}") for a, b in report["recipe"]["pairs"]]


def measured(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The nets with measurements (a diverged net has none)."""
    return [(k, net) for k, net in report["nets"].items() if not net.get("diverged")]


def measured_pair(
    nets: dict[str, Any], skip: str, plain: str, k_skip: str, k_plain: str
) -> list[tuple[str, str]]:
    return [(m, k) for m, k in ((skip, k_skip), (plain, k_plain)) if not nets[k].get("diverged")]
