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
from fastapi.responses import FileResponse, HTMLResponse, Response

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

# The papers docs/metrics.md cites by author and year: each mention links to its entry in the
# page's reference list (where the paper's own address is).
REFERENCES = {
    "Li et al. 2018": (
        "li2018",
        "H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. Visualizing the Loss Landscape of "
        "Neural Nets. NeurIPS 2018.",
        "https://arxiv.org/abs/1712.09913",
    ),
    "Keskar et al. 2017": (
        "keskar2017",
        "N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang. On Large-Batch "
        "Training for Deep Learning: Generalization Gap and Sharp Minima. ICLR 2017.",
        "https://arxiv.org/abs/1609.04836",
    ),
}
# The page's icon (the same curve as index.html's), so /help pages and /docs ask for no 404.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><path d="M2 26 C8 10 12 22 '
    '16 12 S24 4 30 26Z" fill="#3563e9"/></svg>'
)

# The page's own header (index.html's brand and main navigation, no settings: no script here),
# so a help page opened from the page has the way back to every view.
_HEADER = (
    '<a class="skip-link" href="#main">Skip to content</a><header class="topbar">'
    '<a class="brand" href="/#/" aria-label="landscape: gallery"><svg class="brand-mark" '
    'viewBox="0 0 32 32" aria-hidden="true"><path d="M2 26 C8 10 12 22 16 12 S24 4 30 26Z"/>'
    '</svg><span>landscape</span></a><nav class="mainnav" aria-label="Main">'
    '<a href="/#/">Gallery</a><a href="/#/compare">Compare</a><a href="/#/new">New surface</a>'
    '<a href="/#/reports">Reports</a></nav></header>'
)

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


@router.get("/favicon.ico")
@router.get("/favicon.svg")
def favicon() -> Response:
    return Response(FAVICON_SVG, media_type="image/svg+xml")


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
    text = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<em>\1</em>", text)
    for cited, (anchor, _entry, _url) in REFERENCES.items():
        text = text.replace(cited, f'<a href="#ref-{anchor}">{cited}</a>')
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def _navigation(source: str) -> str:
    """Links back to the page and to every second-level heading: the doc is long."""
    headings = [m.group(1) for m in re.finditer(r"^## (.*)$", source, flags=re.M)]
    items = "".join(f'<li><a href="#{_slug(t)}">{html.escape(t)}</a></li>' for t in headings)
    return (
        '<nav class="doc-nav" aria-label="On this page"><p><a href="/">← Back to the surfaces'
        f'</a></p><ul>{items}<li><a href="#references">References</a></li></ul></nav>'
    )


def _references(source: str) -> str:
    cited = [(key, ref) for key, ref in REFERENCES.items() if key in source]
    items = "".join(
        f'<li id="ref-{anchor}">{html.escape(entry)} <a href="{url}">{html.escape(url)}</a></li>'
        for _key, (anchor, entry, url) in cited
    )
    return f'<h2 id="references">References</h2><ol class="references">{items}</ol>'


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
        f'<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        f'<link rel="stylesheet" href="/static/style.css"></head>'
        f"<body>{_HEADER}{_navigation(source)}"
        f'<main class="doc" id="main">{body}{_references(source)}'
        f'<p><a href="/">Back to the page</a></p></main>'
        "</body></html>"
    )
