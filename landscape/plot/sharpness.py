"""The edge-of-stability figure: λmax against the step, the 2/η line, the loss on a second axis.

The same picture as Cohen et al. 2021, Figure 1, from the records ``train_model``'s sharpness
tracking keeps (``metadata["sharpness"]``) or ``trajectory_sharpness`` returns; the page draws
it with ``web/js/sharpness.js``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go


def sharpness_figure(records: Sequence[Mapping[str, Any]], title: str = "") -> go.Figure:
    """λmax per step (left axis), 2/η where η is known (dashed), the loss (right axis, log)."""
    steps = [r["step"] for r in records]
    figure = go.Figure()
    figure.add_scatter(x=steps, y=[r["lambda_max"] for r in records], name="λmax",
                       mode="lines+markers", marker={"size": 4})  # fmt: skip
    if any(r.get("lr") for r in records):
        two = [2.0 / r["lr"] if r.get("lr") else None for r in records]
        figure.add_scatter(x=steps, y=two, name="2/η", mode="lines",
                           line={"dash": "dash", "color": "black"})  # fmt: skip
    figure.add_scatter(x=steps, y=[r["loss"] for r in records], name="training loss",
                       yaxis="y2", mode="lines", line={"color": "#d62728"})  # fmt: skip
    figure.update_layout(
        title=title,
        xaxis={"title": "step"},
        yaxis={"title": "λmax (top Hessian eigenvalue)", "rangemode": "tozero"},
        yaxis2={
            "title": "training loss",
            "overlaying": "y",
            "side": "right",
            "type": "log",
            "dtick": 1,
            "exponentformat": "power",
        },
        legend={"x": 0.02, "y": 0.02, "xanchor": "left", "yanchor": "bottom"},
        template="plotly_white",
        width=900,
        height=520,
    )
    return figure


def write_sharpness_html(records: Sequence[Mapping[str, Any]], out: Path, title: str = "") -> None:
    """A standalone page (Plotly.js embedded: works offline)."""
    sharpness_figure(records, title).write_html(out, include_plotlyjs=True, full_html=True)
