"""The standalone HTML export: the web page's own figure (``figure.js``) with the surface's
numbers and Plotly.js embedded, so it opens offline and shows what the page shows.

Plotly.js (4.8 MB) is embedded once, gzip-compressed and base64-encoded (~2 MB), and unpacked
by the browser's ``DecompressionStream``; values are rounded to 5 significant digits.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import plotly

from landscape.errors import SpecError, UnknownNameError
from landscape.plot.figures import hessian_axes
from landscape.storage import Surface

FIGURE_JS = Path(__file__).resolve().parent / "figure.js"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
DIGITS = 5


@lru_cache(maxsize=1)
def _plotly_gzip_base64() -> str:
    return base64.b64encode(gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=9)).decode()


def _rounded(values: np.ndarray) -> Any:
    """Nested lists with ``DIGITS`` significant digits; NaN (not computed) becomes null."""
    if values.ndim > 1:
        return [_rounded(row) for row in values]
    return [None if not math.isfinite(v) else float(f"{v:.{DIGITS}g}") for v in values.tolist()]


def surface_data(surface: Surface) -> dict[str, Any]:
    """What the figure reads, in the shape of the API's ``GET /api/surfaces/{id}``."""
    attrs = surface.attrs
    grid = surface.spec.grid
    data: dict[str, Any] = {
        "id": surface.key,
        "label": attrs.get("label") or "",
        "model": attrs.get("model") or "model",
        "dataset": surface.spec.data.name,
        "status": surface.status,
        "done": surface.done,
        "total": surface.total,
        "ndim": surface.ndim,
        "grid": {"nx": grid.n_x, "ny": grid.n_y},
        "metrics": list(surface.values),
        "x": _rounded(surface.x),
        "y": None if surface.y is None else _rounded(surface.y),
        "values": {name: _rounded(v) for name, v in surface.values.items()},
    }
    path = surface.trajectory
    if path is not None:
        data["trajectory"] = {
            "x": _rounded(path.coords[:, 0]),
            "y": _rounded(path.coords[:, 1]) if path.coords.shape[1] > 1 else None,
            "epochs": [int(e) for e in path.epochs],
            "explained_variance": list(path.explained_variance_ratio),
        }
    nets = _plane_nets(surface)
    if nets is not None:
        data["nets"] = nets
    eigen = hessian_axes(surface)
    if eigen is not None:
        data["provenance"] = {"directions": eigen}
    return data


def _plane_nets(surface: Surface) -> dict[str, Any] | None:
    """A three_point plane's three checkpoints as the figure marks them (docs/format.md,
    ``directions_info.points``); None for other directions."""
    info = surface.attrs.get("directions_info")
    points = info.get("points") if isinstance(info, dict) else None
    if surface.spec.directions.kind != "three_point" or not points:
        return None
    names = [Path(surface.spec.checkpoint).name, *(str(p["name"]) for p in points[1:])]
    return {
        "names": names,
        "x": [float(p["x"]) for p in points],
        "y": [float(p["y"]) for p in points],
    }


def _title(data: dict[str, Any]) -> str:
    grid = data["grid"]
    size = f"{grid['nx']}×{grid['ny']}" if grid["ny"] else f"{grid['nx']} points"
    name = data["label"] or data["model"]
    partial = "" if data["status"] == "complete" else f" — partial {data['done']}/{data['total']}"
    return f"{name} on {data['dataset']}, {size}{partial}"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 12px; color: #1d2433; }}
.controls {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }}
#plot {{ height: min(80vh, 760px); }}
</style></head>
<body>
<div class="controls">
  <label>Metric <select id="metric">{metric_options}</select></label>
  <label>View <select id="view"><option value="surface">3D surface</option>
    <option value="contour">Contour</option>
    <option value="heatmap">Heatmap</option></select></label>
  <label><input type="checkbox" id="log"> Log scale</label>
</div>
<div id="plot"></div>
<script id="surface-data" type="application/json">{data}</script>
<script id="plotly-gz" type="application/octet-stream">{plotly}</script>
<script type="module">
{figure_js}
// ---- standalone page: unpack Plotly.js, draw, redraw on the controls
const surface = JSON.parse(document.getElementById("surface-data").textContent);
const packed = document.getElementById("plotly-gz").textContent.trim();
const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
const unpacked = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
const source = await new Response(unpacked).text();
await new Promise((resolve, reject) => {{
  const script = document.createElement("script");
  script.src = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
  script.onload = resolve;
  script.onerror = reject;
  document.head.append(script);
}});
const byId = (id) => document.getElementById(id);
const controls = {{ metric: byId("metric"), view: byId("view"), log: byId("log") }};
if (surface.ndim === 1) controls.view.parentElement.hidden = true;
let log = {log};
const draw = () => {{
  const metric = controls.metric.value;
  const scale = scaleFor([surface], metric, {{ log }});
  controls.log.checked = scale.log;
  const fig = figure(surface, {{ metric, view: controls.view.value, scale, title: {title_js} }});
  return Plotly.react("plot", fig.data, fig.layout, PLOT_CONFIG);
}};
leaveWheelToPage(document.getElementById("plot"));
controls.metric.addEventListener("change", () => {{ log = null; draw(); }});
controls.view.addEventListener("change", draw);
controls.log.addEventListener("change", () => {{ log = controls.log.checked; draw(); }});
await draw();
document.body.dataset.ready = "true";
</script>
</body></html>
"""


def write_html(
    surface: Surface, out: str | Path, metric: str = "train_loss", *, log: bool | None = None
) -> Path:
    """A standalone page drawing ``surface`` with the web page's figure; opens offline.

    ``log``: None picks the page's default (log for losses spanning two decades or more).
    """
    if metric not in surface.values:
        raise UnknownNameError("metric", metric, list(surface.values))
    if surface.z is not None:
        raise SpecError(
            f"a standalone page draws a curve or a surface, and this is a {surface.ndim}D "
            "volume: open it in the web page (volume view with a z slider)"
        )
    data = surface_data(surface)
    title = _title(data)
    options = "".join(
        f'<option value="{html.escape(m)}"{" selected" if m == metric else ""}>'
        f"{html.escape(m.replace('_acc', ' accuracy').replace('_', ' '))}</option>"
        for m in data["metrics"]
    )
    page = _PAGE.format(
        title=html.escape(title),
        metric_options=options,
        data=json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/"),
        plotly=_plotly_gzip_base64(),
        figure_js=FIGURE_JS.read_text(encoding="utf-8"),
        log="null" if log is None else str(log).lower(),
        title_js=json.dumps(title).replace("</", "<\\/"),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
