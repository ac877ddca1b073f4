"""Plotly figures of surfaces for notebooks and comparisons, on the web page's scale rules.

The rules (a log scale for losses spanning decades, linear losses clamped at ``LOSS_CAP`` with
the clamped top in grey, the titles saying so) are figure.js's, read through
``landscape.plot.scale``, so a notebook figure shows what the page and the HTML export show.

Plotly's ``surface`` takes ``z`` as ``(ny, nx)`` with ``z[j][i]`` at ``(x[i], y[j])`` -- the
layout of the file -- so arrays go in untransposed. NaN (not yet computed) becomes a gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape.errors import SpecError
from landscape.plot.scale import (
    Scale,
    cap_note,
    clamp_display,
    colorscale,
    decade_ticks,
    log10_values,
    metric_label,
    metric_values,
    scale_for,
    short,
    value_title,
)
from landscape.storage import Surface

__all__ = ["comparison_figure", "surface_figure"]


def _scale(arrays: Sequence[np.ndarray], metric: str, log: bool | None) -> Scale:
    """The page's scale; a log scale asked for over values <= 0 is an error rather than gaps."""
    if log:
        for values in arrays:
            log10_values(values, metric)
    return scale_for(arrays, metric, log=log)


def _hover_text(values: np.ndarray) -> np.ndarray:
    """The true values for hover (what is drawn may be clamped or log10)."""
    flat = [
        "not computed yet" if not math.isfinite(v) else f"{v:.5g}" for v in values.ravel().tolist()
    ]
    return np.asarray(flat, dtype=object).reshape(values.shape)


def _titled(title: str, scale: Scale) -> str:
    """The figure title, with the clamp in words under it when there is one."""
    note = cap_note(scale)
    if not note:
        return title
    return f"{title}<br><sup>{note}</sup>" if title else f"<sup>{note}</sup>"


def _value_axis(scale: Scale, title: str) -> dict[str, Any]:
    """A value axis (3D z or colour bar) on the scale: title, decade labels on log scales."""
    axis: dict[str, Any] = {"title": {"text": title}}
    axis.update(decade_ticks(scale) or {})
    return axis


def _full_range(scale: Scale) -> list[float] | None:
    low, high = scale.range
    return [low, high] if low is not None and high is not None and low < high else None


def _title(surface: Surface) -> str:
    model = surface.attrs.get("model", "model")
    grid = surface.spec.grid
    size = f"{grid.n_x}×{grid.n_y}" if grid.n_y else f"{grid.n_x} points"
    status = "" if surface.status == "complete" else f" — partial {surface.done}/{surface.total}"
    return f"{model} on {surface.spec.data.name}, {size}{status}"


def surface_figure(
    surface: Surface, metric: str = "train_loss", *, log: bool | None = None
) -> go.Figure:
    """A 2D surface as 3D surface + contour side by side; a 1D one as its curve, with the
    matching accuracy on a second axis (loss and accuracy move on different scales).

    ``log``: None draws as the page does (log for losses spanning two decades or more; linear
    losses above the cap drawn at the cap, in grey); True/False force the scale.
    """
    values = metric_values(surface, metric)
    scale = _scale([values], metric, log)
    if surface.y is None:
        return _curve_figure(surface, metric, scale)
    z = clamp_display(values, scale)
    name, title = metric_label(metric), value_title(metric, scale)
    low, high = scale.range
    common: dict[str, Any] = {
        "x": surface.x,
        "y": surface.y,
        "z": z,
        "text": _hover_text(values),
        "hovertemplate": f"x %{{x:.4f}}<br>y %{{y:.4f}}<br>{name} %{{text}}<extra></extra>",
        "colorscale": colorscale(scale.capped),
        "name": metric,
    }
    fig = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "surface"}, {"type": "contour"}]],
        subplot_titles=(f"{name} surface", f"{name} contours"),
        column_widths=[0.55, 0.45],
    )
    fig.add_trace(go.Surface(**common, cmin=low, cmax=high, showscale=False), row=1, col=1)
    fig.add_trace(
        go.Contour(
            **common,
            zauto=False,
            zmin=low,
            zmax=high,
            colorbar=_value_axis(scale, title),
            # labels would be log10 units on a log scale: the colour bar has the decades
            contours={"coloring": "heatmap", "showlabels": not scale.log},
        ),
        row=1,
        col=2,
    )
    if surface.trajectory is not None:
        _add_trajectory(fig, surface, z)
    x_title, y_title = axis_titles(surface)
    zaxis = _value_axis(scale, title)
    if (full := _full_range(scale)) is not None:
        zaxis["range"] = full
    fig.update_layout(
        title=_titled(_title(surface), scale),
        scene={
            "xaxis": {"title": {"text": x_title}},
            "yaxis": {"title": {"text": y_title}},
            "zaxis": zaxis,
        },
        height=600,
    )
    fig.update_xaxes(title_text=x_title, row=1, col=2)
    fig.update_yaxes(title_text=y_title, row=1, col=2, scaleanchor="x", scaleratio=1)
    return fig


EIGENVECTOR_NAMES = {  # which Hessian eigenvectors x and y are (figure.js's EIGENVECTOR_NAMES)
    "max": ("top eigenvector", "second eigenvector"),
    "min": ("bottom eigenvector", "second from the bottom"),
    "max,min": ("top eigenvector", "bottom eigenvector"),
}


def axis_titles(surface: Surface) -> tuple[str, str]:
    """``"PC1 (83.2 %)"`` on PCA surfaces: how much of the trajectory's variance each axis
    holds tells how faithful the drawn path is (Li et al. 2018, §7); on Hessian directions the
    eigenvector and its eigenvalue, ``"top eigenvector (λ = 76.3)"``; else ``x``/``y``."""
    eigen = hessian_axes(surface)
    if eigen is not None:
        names = EIGENVECTOR_NAMES.get(eigen["hessian_ends"], EIGENVECTOR_NAMES["max"])
        values = [*eigen["eigenvalues"], math.nan, math.nan]
        x, y = (
            f"{name} (λ = {short(values[k])})" if math.isfinite(values[k]) else name
            for k, name in enumerate(names)
        )
        return x, y
    trajectory = surface.trajectory
    if trajectory is None or not trajectory.explained_variance_ratio:
        return "x", "y"
    ratios = [*trajectory.explained_variance_ratio, math.nan, math.nan]

    def title(k: int) -> str:
        r = ratios[k]
        return f"PC{k + 1} ({100 * r:.1f} %)" if math.isfinite(r) else f"PC{k + 1}"

    return title(0), title(1)


def hessian_axes(surface: Surface) -> dict[str, Any] | None:
    """Which eigenvectors a Hessian-direction surface's axes are and their eigenvalues (the
    API's ``provenance.directions`` fields); None for other directions."""
    info = surface.attrs.get("directions_info")
    if surface.spec.directions.kind != "hessian" or not isinstance(info, dict):
        return None
    eigenvalues = [float(v) for v in info.get("eigenvalues") or []]
    if not eigenvalues:
        return None
    return {"kind": "hessian", "eigenvalues": eigenvalues,
            "hessian_ends": surface.spec.directions.hessian_ends}  # fmt: skip


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


def _curve_figure(surface: Surface, metric: str, scale: Scale) -> go.Figure:
    """The curve on a log axis (true values) or clamped to the linear range, as the page."""
    values = surface.values[metric]
    y = values if scale.log else clamp_display(values, scale)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=surface.x,
            y=y,
            name=metric,
            mode="lines",
            text=_hover_text(values),
            hovertemplate=f"x %{{x:.4f}}<br>{metric_label(metric)} %{{text}}<extra></extra>",
        )
    )
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
    axis: dict[str, Any] = {
        "title_text": value_title(metric, scale),
        "type": "log" if scale.log else "linear",
    }
    if (full := _full_range(scale)) is not None:
        axis["range"] = full  # log10 units on a log axis, as Plotly wants
    fig.update_yaxes(**axis, secondary_y=False)
    fig.update_xaxes(title_text="x")
    fig.update_layout(title=_titled(_title(surface), scale), height=500)
    return fig


def _partner_metric(metric: str) -> str:
    """train_loss ↔ train_acc: the other half of a split's pair."""
    split, _, kind = metric.rpartition("_")
    return f"{split}_{'acc' if kind == 'loss' else 'loss'}"


def comparison_figure(
    surfaces: Sequence[Surface],
    metric: str = "train_loss",
    *,
    log: bool | None = None,
    titles: Sequence[str] | None = None,
) -> go.Figure:
    """Several surfaces side by side on one shared scale, so heights compare at a glance (e.g.
    ResNet-56 with and without shortcuts): as the web compare view, log when the losses of
    all of them together span decades, one clamp and one range for all."""
    if not surfaces:
        raise SpecError("comparison_figure needs at least one surface")
    ndims = {s.ndim for s in surfaces}
    if len(ndims) != 1:
        raise SpecError("cannot compare 1D curves with 2D surfaces in one figure")
    raw = [metric_values(s, metric) for s in surfaces]
    scale = _scale(raw, metric, log)
    names = list(titles) if titles else [_title(s) for s in surfaces]
    title = value_title(metric, scale)
    low, high = scale.range
    full = _full_range(scale)
    n = len(surfaces)
    if ndims == {1}:
        fig = make_subplots(rows=1, cols=n, subplot_titles=names, shared_yaxes=True)
        for k, (s, values) in enumerate(zip(surfaces, raw, strict=True), start=1):
            y = values if scale.log else clamp_display(values, scale)
            fig.add_trace(go.Scatter(x=s.x, y=y, name=names[k - 1], mode="lines"), row=1, col=k)
        fig.update_yaxes(type="log" if scale.log else "linear")
        fig.update_yaxes(title_text=title, row=1, col=1)
        if full is not None:
            fig.update_yaxes(range=full, row=1, col=1)
        fig.update_layout(height=450, title=_titled("", scale) or None)
        return fig
    fig = make_subplots(rows=1, cols=n, specs=[[{"type": "surface"}] * n], subplot_titles=names)
    zaxis = _value_axis(scale, title)
    if full is not None:
        zaxis["range"] = full
    for k, (s, values) in enumerate(zip(surfaces, raw, strict=True), start=1):
        fig.add_trace(
            go.Surface(
                x=s.x,
                y=s.y,
                z=clamp_display(values, scale),
                text=_hover_text(values),
                hovertemplate=f"{metric_label(metric)} %{{text}}<extra>{names[k - 1]}</extra>",
                cmin=low,
                cmax=high,
                colorscale=colorscale(scale.capped),
                colorbar=_value_axis(scale, title),
                showscale=k == n,
                name=names[k - 1],
            ),
            row=1,
            col=k,
        )
        scene = "scene" if k == 1 else f"scene{k}"
        fig.update_layout({scene: {"zaxis": zaxis, "aspectmode": "cube"}})
    fig.update_layout(height=550, title=_titled("", scale) or None)
    return fig
