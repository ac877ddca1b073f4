"""Drawing surfaces: Plotly figures for notebooks and comparisons (``figures``), the
standalone HTML export that embeds the web page's own figure (``html``), ParaView ``.vtp``
(``vtp``), and the scale rules (``scale``).

``figure.js`` is the one definition of those rules (the loss cap, when a log scale is picked,
the grey clamped top, the titles): the page imports it, the HTML export embeds it, and
``scale`` reads its constants so the Python figures draw by the same rules.

The names below load on first use: plotly takes seconds to import, and ``landscape.plot.scale``
(used by the API and the VTP export) must not pay for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from landscape.plot.figures import comparison_figure, surface_figure
    from landscape.plot.html import write_html
    from landscape.plot.scale import scale_for
    from landscape.plot.vtp import export_vtp

__all__ = ["comparison_figure", "export_vtp", "scale_for", "surface_figure", "write_html"]

_HOMES = {
    "comparison_figure": "landscape.plot.figures",
    "surface_figure": "landscape.plot.figures",
    "write_html": "landscape.plot.html",
    "export_vtp": "landscape.plot.vtp",
    "scale_for": "landscape.plot.scale",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
