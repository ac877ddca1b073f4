"""Figures: traces and shapes (never transposed), offline HTML, ParaView .vtp."""

from __future__ import annotations

import base64
import gzip
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from landscape.errors import SpecError, UnknownNameError
from landscape.plot.figures import comparison_figure, surface_figure
from landscape.plot.html import FIGURE_JS, PLOTLY_JS, write_html
from landscape.plot.vtp import export_vtp
from landscape.specs import GridSpec, SurfaceSpec
from landscape.storage import Surface, grid_coordinates


def _surface(nx: int = 5, ny: int | None = 3, offset: float = 0.0) -> Surface:
    grid = (
        GridSpec(n_x=nx, n_y=ny, y_range=(-0.5, 0.5))
        if ny
        else GridSpec(n_x=nx, n_y=None, y_range=None)
    )
    spec = SurfaceSpec(checkpoint="c.pt", grid=grid)
    x, y = grid_coordinates(grid)
    if y is None:
        loss, acc = 1 + x**2 + offset, 0.9 - 0.1 * x**2
    else:
        xx, yy = np.meshgrid(x, y)
        loss, acc = 1 + xx**2 + 3 * yy**2 + 0.1 * xx + offset, 0.9 - 0.1 * xx**2
    return Surface(
        spec=spec,
        status="complete",
        x=x,
        y=y,
        values={"train_loss": loss, "train_acc": acc},
        attrs={"model": "toy"},
    )


def test_2d_figure_is_surface_plus_contour_untransposed() -> None:
    surface = _surface()
    fig = surface_figure(surface)
    assert [t.type for t in fig.data] == ["surface", "contour"]
    for trace in fig.data:
        z = np.asarray(trace.z)
        assert z.shape == (3, 5)  # (ny, nx): z[j][i] at (x[i], y[j])
        np.testing.assert_allclose(z, surface.values["train_loss"])
        np.testing.assert_allclose(np.asarray(trace.x), surface.x)
        np.testing.assert_allclose(np.asarray(trace.y), surface.y)


def test_log_scale_and_its_errors() -> None:
    surface = _surface()
    fig = surface_figure(surface, log=True)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), np.log10(surface.values["train_loss"]))
    surface.values["train_loss"][0, 0] = -1.0
    with pytest.raises(SpecError, match="log scale"):
        surface_figure(surface, log=True)
    with pytest.raises(UnknownNameError, match="test_loss"):
        surface_figure(surface, "test_loss")


def test_nan_points_stay_gaps() -> None:
    surface = _surface()
    surface.values["train_loss"][1, 2] = np.nan
    z = np.asarray(surface_figure(surface).data[0].z, dtype=float)
    assert np.isnan(z[1, 2]) and np.isfinite(z).sum() == 14


def test_1d_curve_has_loss_and_accuracy_on_twin_axes() -> None:
    surface = _surface(nx=9, ny=None)
    fig = surface_figure(surface, log=True)
    assert [t.type for t in fig.data] == ["scatter", "scatter"]
    assert [t.name for t in fig.data] == ["train_loss", "train_acc"]
    assert fig.data[0].yaxis in (None, "y") and fig.data[1].yaxis == "y2"
    assert fig.layout.yaxis.type == "log"
    np.testing.assert_allclose(np.asarray(fig.data[0].y), surface.values["train_loss"])


def test_comparison_shares_the_value_range() -> None:
    a, b = _surface(), _surface(offset=2.0)
    fig = comparison_figure([a, b], "train_loss")
    assert [t.type for t in fig.data] == ["surface", "surface"]
    low = float(a.values["train_loss"].min())
    high = float(b.values["train_loss"].max())
    for trace in fig.data:
        assert (trace.cmin, trace.cmax) == (low, high)
    assert list(fig.layout.scene.zaxis.range) == list(fig.layout.scene2.zaxis.range) == [low, high]
    curves = comparison_figure([_surface(ny=None), _surface(ny=None, offset=1)])
    assert len(curves.data) == 2
    with pytest.raises(SpecError):
        comparison_figure([_surface(), _surface(ny=None)])


def test_html_export_embeds_the_pages_figure_and_plotly_once(tmp_path: Path) -> None:
    """The export draws landscape/plot/figure.js (the page's figure) over the surface's numbers,
    with Plotly.js inside once, compressed: offline, and far below plotly.min.js's 4.8 MB."""
    surface = _surface()
    surface.values["train_loss"][1, 2] = np.nan
    html = write_html(surface, tmp_path / "s.html").read_text(encoding="utf-8")
    assert len(html.encode()) < 2_600_000
    assert FIGURE_JS.read_text(encoding="utf-8") in html
    assert html.count('id="plotly-gz"') == 1
    packed = re.search(r'id="plotly-gz"[^>]*>([^<]+)<', html)
    assert packed is not None
    assert gzip.decompress(base64.b64decode(packed.group(1))) == PLOTLY_JS.read_bytes()
    assert re.findall(r"<script[^>]*\bsrc=", html) == []  # nothing loaded from elsewhere
    data = json.loads(re.search(r'id="surface-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert data["values"]["train_loss"][1][2] is None  # not computed: a gap, not a number
    got = np.array(data["values"]["train_loss"], dtype=float)
    want = surface.values["train_loss"]
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4)
    assert data["ndim"] == 2 and data["model"] == "toy" and len(data["x"]) == 5


def test_html_export_refuses_an_unknown_metric(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="test_loss"):
        write_html(_surface(), tmp_path / "s.html", "test_loss")


def test_vtp_is_xml_polydata_with_every_point(tmp_path: Path) -> None:
    surface = _surface(nx=5, ny=3)
    surface.values["train_loss"][2, 4] = np.nan  # the corner: one cell fewer
    root = ET.parse(export_vtp(surface, tmp_path / "s.vtp")).getroot()
    assert root.tag == "VTKFile" and root.attrib["type"] == "PolyData"
    piece = root.find("PolyData/Piece")
    assert piece is not None
    assert piece.attrib["NumberOfPoints"] == "15"
    assert piece.attrib["NumberOfPolys"] == str(4 * 2 - 1)
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    assert points.shape == (15, 3)
    # point k = (x[i], y[j], value[j, i]) with k = j * nx + i
    assert tuple(points[7]) == pytest.approx(
        (surface.x[2], surface.y[1], surface.values["train_loss"][1, 2])
    )
    names = [a.attrib["Name"] for a in piece.findall("PointData/DataArray")]
    assert names == ["train_loss", "train_acc"]
    offsets = piece.find("Polys/DataArray[@Name='offsets']").text.split()
    assert offsets[-1] == str(4 * 7)


def test_vtp_of_a_curve_is_a_polyline(tmp_path: Path) -> None:
    root = ET.parse(export_vtp(_surface(nx=6, ny=None), tmp_path / "c.vtp")).getroot()
    piece = root.find("PolyData/Piece")
    assert piece is not None
    assert (piece.attrib["NumberOfPoints"], piece.attrib["NumberOfLines"]) == ("6", "5")
