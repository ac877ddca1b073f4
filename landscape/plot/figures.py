"""Figures of surfaces: Plotly figures for notebooks, the standalone HTML export (the web
page's own figure, see ``plot_html``) and ParaView ``.vtp`` for publication renders.

Plotly's ``surface`` takes ``z`` as ``(ny, nx)`` with ``z[j][i]`` at ``(x[i], y[j])`` -- the
layout of the file -- so arrays go in untransposed. NaN (not yet computed) becomes a gap.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape.errors import SpecError, UnknownNameError
from landscape.plot.html import write_html
from landscape.storage import Surface

COLORSCALE = "Viridis"

__all__ = ["comparison_figure", "export_vtp", "surface_figure", "write_html"]


def _metric_values(surface: Surface, metric: str) -> np.ndarray:
    if metric not in surface.values:
        raise UnknownNameError("metric", metric, list(surface.values))
    return surface.values[metric]


def _log_values(values: np.ndarray, metric: str) -> np.ndarray:
    """log10 of a metric; non-positive values cannot be drawn on a log scale."""
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise SpecError(
            f"cannot use a log scale for {metric!r}: it has values <= 0 "
            f"(min {float(finite.min()):.3g})"
        )
    with np.errstate(invalid="ignore"):
        logged: np.ndarray = np.log10(values)
    return logged


def _title(surface: Surface) -> str:
    model = surface.attrs.get("model", "model")
    grid = surface.spec.grid
    size = f"{grid.n_x}×{grid.n_y}" if grid.n_y else f"{grid.n_x} points"
    status = "" if surface.status == "complete" else f" — partial {surface.done}/{surface.total}"
    return f"{model} on {surface.spec.data.name}, {size}{status}"


def surface_figure(surface: Surface, metric: str = "train_loss", *, log: bool = False) -> go.Figure:
    """A 2D surface as 3D surface + contour side by side; a 1D one as its curve, with the
    matching accuracy on a second axis (loss and accuracy move on different scales)."""
    values = _metric_values(surface, metric)
    if surface.y is None:
        return _curve_figure(surface, metric, log=log)
    z = _log_values(values, metric) if log else values
    label = f"log10 {metric}" if log else metric
    fig = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "surface"}, {"type": "contour"}]],
        subplot_titles=(f"{label} surface", f"{label} contours"),
        column_widths=[0.55, 0.45],
    )
    fig.add_trace(
        go.Surface(
            x=surface.x, y=surface.y, z=z, colorscale=COLORSCALE, name=label, showscale=False
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Contour(
            x=surface.x,
            y=surface.y,
            z=z,
            colorscale=COLORSCALE,
            name=label,
            colorbar={"title": {"text": label}},
            contours={"coloring": "heatmap", "showlabels": True},
        ),
        row=1,
        col=2,
    )
    if surface.trajectory is not None:
        _add_trajectory(fig, surface, z)
    x_title, y_title = axis_titles(surface)
    fig.update_layout(
        title=_title(surface),
        scene={"xaxis_title": x_title, "yaxis_title": y_title, "zaxis_title": label},
        height=600,
    )
    fig.update_xaxes(title_text=x_title, row=1, col=2)
    fig.update_yaxes(title_text=y_title, row=1, col=2, scaleanchor="x", scaleratio=1)
    return fig


def axis_titles(surface: Surface) -> tuple[str, str]:
    """``"PC1 (83.2 %)"`` on PCA surfaces: how much of the trajectory's variance each axis
    holds tells how faithful the drawn path is (Li et al. 2018, §7); else ``x``/``y``."""
    trajectory = surface.trajectory
    if trajectory is None or not trajectory.explained_variance_ratio:
        return "x", "y"
    ratios = [*trajectory.explained_variance_ratio, math.nan, math.nan]

    def title(k: int) -> str:
        r = ratios[k]
        return f"PC{k + 1} ({100 * r:.1f} %)" if math.isfinite(r) else f"PC{k + 1}"

    return title(0), title(1)


def _add_trajectory(fig: go.Figure, surface: Surface, z: np.ndarray) -> None:
    """The training path: markers per snapshot on the contour (Li et al. 2018, Fig. 9), and a
    line on the 3D surface at the interpolated height (absent where it leaves the grid)."""
    trajectory = surface.trajectory
    assert trajectory is not None and surface.y is not None
    px, py = trajectory.coords[:, 0], trajectory.coords[:, 1]
    text = [f"epoch {e}" for e in trajectory.epochs]
    style = {"color": "#e4572e", "width": 2}
    fig.add_trace(
        go.Scatter(
            x=px,
            y=py,
            mode="lines+markers",
            name="trajectory",
            text=text,
            line=style,
            marker={"size": 7, "color": "#e4572e", "line": {"color": "white", "width": 1}},
            hovertemplate="%{text}<br>(%{x:.3f}, %{y:.3f})<extra>trajectory</extra>",
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter3d(
            x=px,
            y=py,
            z=bilinear(surface.x, surface.y, z, px, py),
            mode="lines+markers",
            name="trajectory",
            text=text,
            line=style,
            marker={"size": 3, "color": "#e4572e"},
            hovertemplate="%{text}<extra>trajectory</extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )


def bilinear(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray, py: np.ndarray
) -> np.ndarray:
    """``z`` (ny, nx) interpolated at the points ``(px, py)``; NaN outside the grid."""
    if len(x) < 2 or len(y) < 2:
        return np.full(len(px), np.nan)
    i = np.clip(np.searchsorted(x, px) - 1, 0, len(x) - 2)
    j = np.clip(np.searchsorted(y, py) - 1, 0, len(y) - 2)
    tx = (px - x[i]) / (x[i + 1] - x[i])
    ty = (py - y[j]) / (y[j + 1] - y[j])
    out = (
        z[j, i] * (1 - tx) * (1 - ty)
        + z[j, i + 1] * tx * (1 - ty)
        + z[j + 1, i] * (1 - tx) * ty
        + z[j + 1, i + 1] * tx * ty
    )
    inside = (px >= x[0]) & (px <= x[-1]) & (py >= y[0]) & (py <= y[-1])
    return np.where(inside, out, np.nan)


def _curve_figure(surface: Surface, metric: str, *, log: bool) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=surface.x, y=surface.values[metric], name=metric, mode="lines"))
    partner = _partner_metric(metric)
    if partner in surface.values:
        fig.add_trace(
            go.Scatter(
                x=surface.x,
                y=surface.values[partner],
                name=partner,
                mode="lines",
                line={"dash": "dash"},
            ),
            secondary_y=True,
        )
        fig.update_yaxes(title_text=partner, secondary_y=True)
    if log:
        _log_values(surface.values[metric], metric)  # same error as 2D for values <= 0
    fig.update_yaxes(title_text=metric, type="log" if log else "linear", secondary_y=False)
    fig.update_xaxes(title_text="x")
    fig.update_layout(title=_title(surface), height=500)
    return fig


def _partner_metric(metric: str) -> str:
    """train_loss ↔ train_acc: the other half of a split's pair."""
    split, _, kind = metric.rpartition("_")
    return f"{split}_{'acc' if kind == 'loss' else 'loss'}"


def comparison_figure(
    surfaces: Sequence[Surface],
    metric: str = "train_loss",
    *,
    log: bool = False,
    titles: Sequence[str] | None = None,
) -> go.Figure:
    """Several surfaces side by side on one shared value range, so heights compare at a glance
    (e.g. ResNet-56 with and without shortcuts)."""
    if not surfaces:
        raise SpecError("comparison_figure needs at least one surface")
    ndims = {s.ndim for s in surfaces}
    if len(ndims) != 1:
        raise SpecError("cannot compare 1D curves with 2D surfaces in one figure")
    arrays = [_metric_values(s, metric) for s in surfaces]
    if log:
        arrays = [_log_values(a, metric) for a in arrays]
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    names = list(titles) if titles else [_title(s) for s in surfaces]
    label = f"log10 {metric}" if log else metric
    n = len(surfaces)
    if ndims == {1}:
        fig = make_subplots(rows=1, cols=n, subplot_titles=names, shared_yaxes=True)
        for k, (s, z) in enumerate(zip(surfaces, arrays, strict=True), start=1):
            fig.add_trace(go.Scatter(x=s.x, y=z, name=names[k - 1], mode="lines"), row=1, col=k)
        fig.update_yaxes(range=[low, high], title_text=label, row=1, col=1)
        fig.update_layout(height=450)
        return fig
    fig = make_subplots(rows=1, cols=n, specs=[[{"type": "surface"}] * n], subplot_titles=names)
    for k, (s, z) in enumerate(zip(surfaces, arrays, strict=True), start=1):
        fig.add_trace(
            go.Surface(
                x=s.x,
                y=s.y,
                z=z,
                cmin=low,
                cmax=high,
                colorscale=COLORSCALE,
                showscale=k == n,
                name=names[k - 1],
            ),
            row=1,
            col=k,
        )
        scene = "scene" if k == 1 else f"scene{k}"
        fig.update_layout(
            {scene: {"zaxis": {"range": [low, high], "title": label}, "aspectmode": "cube"}}
        )
    fig.update_layout(height=550)
    return fig


def export_vtp(
    surface: Surface, out: str | Path, metric: str = "train_loss", *, log: bool = False
) -> Path:
    """The surface as ParaView XML PolyData (as the reference tool's ``h52vtp``).

    2D: one point per grid point at ``(x, y, value)`` and a quad per grid cell whose four
    corners are computed; 1D: a polyline at ``(x, 0, value)``. Every metric rides along as
    point data (NaN where not computed); uncomputed points sit at z = 0 outside any cell.
    """
    values = _metric_values(surface, metric)
    z = _log_values(values, metric) if log else values
    if surface.y is None:
        xx, yy = surface.x, np.zeros_like(surface.x)
        ok = np.isfinite(z)
        cells = [[i, i + 1] for i in range(len(z) - 1) if ok[i] and ok[i + 1]]
        cell_tag = "Lines"
    else:
        xx, yy = np.meshgrid(surface.x, surface.y)  # (ny, nx), row-major like the values
        ny, nx = z.shape
        ok = np.isfinite(z)
        cells = [
            [j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1, (j + 1) * nx + i]
            for j in range(ny - 1)
            for i in range(nx - 1)
            if ok[j, i] and ok[j, i + 1] and ok[j + 1, i + 1] and ok[j + 1, i]
        ]
        cell_tag = "Polys"
    points = np.stack([xx.ravel(), yy.ravel(), np.where(np.isfinite(z), z, 0.0).ravel()], axis=1)
    n_points = len(points)

    root = ET.Element("VTKFile", type="PolyData", version="0.1", byte_order="LittleEndian")
    piece = ET.SubElement(
        ET.SubElement(root, "PolyData"),
        "Piece",
        NumberOfPoints=str(n_points),
        NumberOfVerts="0",
        NumberOfLines=str(len(cells) if cell_tag == "Lines" else 0),
        NumberOfStrips="0",
        NumberOfPolys=str(len(cells) if cell_tag == "Polys" else 0),
    )
    point_data = ET.SubElement(piece, "PointData", Scalars=metric)
    for name, array in surface.values.items():
        _data_array(point_data, name, "Float64", array.ravel())
    _data_array(ET.SubElement(piece, "Points"), "Points", "Float64", points.ravel(), components=3)
    connectivity = np.asarray(cells, dtype=np.int64).ravel()
    offsets = np.cumsum([len(c) for c in cells], dtype=np.int64)
    block = ET.SubElement(piece, cell_tag)
    _data_array(block, "connectivity", "Int64", connectivity)
    _data_array(block, "offsets", "Int64", offsets)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out


def _data_array(
    parent: ET.Element, name: str, vtk_type: str, data: np.ndarray, *, components: int = 1
) -> None:
    element = ET.SubElement(
        parent,
        "DataArray",
        type=vtk_type,
        Name=name,
        NumberOfComponents=str(components),
        format="ascii",
    )
    if vtk_type.startswith("Float"):
        element.text = " ".join("nan" if math.isnan(v) else repr(float(v)) for v in data)
    else:
        element.text = " ".join(str(int(v)) for v in data)
