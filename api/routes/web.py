"""The static web client: ``/`` (index.html), ``/static/*`` (mounted in app.py) and Plotly.js.

Plotly.js comes from the installed ``plotly`` package, so the page works with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import SettingsDep

router = APIRouter(tags=["web"], include_in_schema=False)

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>landscape</title>
<p>The web client is not installed here (no index.html under LANDSCAPE_WEB_DIR).
The API is at <a href="/docs">/docs</a>.</p>"""


@router.get("/")
def index(settings: SettingsDep) -> Any:
    page = settings.web_dir / "index.html"
    if not page.is_file():
        return HTMLResponse(_PLACEHOLDER)
    return FileResponse(page, media_type="text/html")


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    if not PLOTLY_JS.is_file():  # pragma: no cover - a broken plotly install
        raise HTTPException(404, "plotly.min.js is missing from the installed plotly package")
    return FileResponse(PLOTLY_JS, media_type="application/javascript")
