"""A surface as ParaView XML PolyData (``.vtp``), as the reference tool's ``h52vtp``, for
publication renders. Heights are the true values (or their log10): ParaView users pick their own
colour map and clipping, so none of the page's clamp applies. No plotly needed here.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landscape.errors import SpecError
from landscape.plot.scale import log10_values, metric_values

if TYPE_CHECKING:
    from landscape.storage import Surface

__all__ = ["export_vtp"]


def export_vtp(
    surface: Surface, out: str | Path, metric: str = "train_loss", *, log: bool = False
) -> Path:
    """The surface as ParaView XML PolyData.

    2D: one point per grid point at ``(x, y, value)`` and a quad per grid cell whose four
    corners are computed; 1D: a polyline at ``(x, 0, value)``. Every metric rides along as
    point data (NaN where not computed); uncomputed points sit at z = 0 outside any cell.
    """
    if surface.z is not None:
        raise SpecError("VTP export takes a curve or a surface, not a 3D volume")
    values = metric_values(surface, metric)
    z = log10_values(values, metric) if log else values
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
