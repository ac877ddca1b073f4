"""The static web client: ``/`` (index.html), ``/static/*`` (mounted in app.py), its vendored
scripts, the API docs and the metrics' definitions -- everything from installed files.

Plotly.js comes from the ``plotly`` package, Swagger UI 5 (OpenAPI 3.1) from
``fastapi-offline``'s static files (ReDoc is off: it fetches its logo from a CDN), and the
figure definition from ``landscape`` itself, so the page and ``/docs`` work with no network.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import fastapi_offline
import plotly
from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

import landscape
from api.deps import SettingsDep

router = APIRouter(tags=["web"], include_in_schema=False)

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
FIGURE_JS = Path(landscape.__file__).resolve().parent / "plot" / "figure.js"
DOCS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_FILES = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
# docs/ sits next to web/ in a checkout and in the image (api/ may be installed elsewhere).
METRICS_DOC = Path("docs") / "metrics.md"

_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>landscape</title>
<p>The web client is not installed here (no index.html under LANDSCAPE_WEB_DIR).
The API is at <a href="/docs">/docs</a>.</p>"""


@router.get("/")
def index(settings: SettingsDep) -> Any:
    page = settings.web_dir / "index.html"
    if not page.is_file():
        return HTMLResponse(_PLACEHOLDER)
    return FileResponse(page, media_type="text/html")


def _installed(path: Path, media_type: str) -> FileResponse:
    if not path.is_file():  # pragma: no cover - a broken install
        raise HTTPException(404, f"{path.name} is missing from the installed packages")
    return FileResponse(path, media_type=media_type)


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    return _installed(PLOTLY_JS, "application/javascript")


@router.get("/vendor/figure.js")
def figure_js() -> FileResponse:
    """The surface figure shared by the page and ``landscape plot``'s HTML export."""
    return _installed(FIGURE_JS, "application/javascript")


@router.get("/vendor/docs/{name}")
def docs_asset(name: str) -> FileResponse:
    if name not in DOCS_FILES:
        raise HTTPException(404, f"no API docs file {name!r}")
    return _installed(DOCS_DIR / name, DOCS_FILES[name])


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI from installed files (FastAPI's default loads it from a CDN)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="landscape API",
        swagger_js_url="/vendor/docs/swagger-ui-bundle.js",
        swagger_css_url="/vendor/docs/swagger-ui.css",
        swagger_favicon_url="/vendor/docs/favicon.png",
    )


@router.get("/help/metrics")
def metrics_help(settings: SettingsDep) -> HTMLResponse:
    """docs/metrics.md as a page: each metric's heading is an anchor the page links to."""
    path = settings.web_dir.parent / METRICS_DOC
    if not path.is_file():
        raise HTTPException(404, "docs/metrics.md is not installed here")
    return HTMLResponse(markdown_page(path.read_text(encoding="utf-8"), "Surface metrics"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def markdown_page(source: str, title: str) -> str:
    """The small Markdown subset docs/metrics.md uses: headings (with ids), paragraphs,
    bullet lists and fenced code."""
    out: list[str] = []
    paragraph: list[str] = []
    in_list = in_code = False

    def flush() -> None:
        nonlocal in_list
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if in_list:
            out.append("</ul>")
            in_list = False

    for line in source.splitlines():
        if line.startswith("```"):
            flush()
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
        elif in_code:
            out.append(html.escape(line))
        elif match := re.match(r"(#{1,4}) (.*)", line):
            flush()
            level, text = len(match.group(1)), match.group(2)
            out.append(f'<h{level} id="{_slug(text)}">{_inline(text)}</h{level}>')
        elif line.startswith("- "):
            if paragraph:
                out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
                paragraph.clear()
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
    flush()
    body = "\n".join(out)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · landscape</title>"
        f'<link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><main class="doc">{body}<p><a href="/">Back to the page</a></p></main>'
        "</body></html>"
    )
