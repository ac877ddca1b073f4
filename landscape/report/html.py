"""The skip-vs-plain report as one self-contained HTML file that opens offline.

Plotly's JavaScript is inlined from the installed ``plotly`` package (nothing is fetched when
the file is opened); figures are plain Plotly JSON built here from ``report.json``'s numbers.
Losses are drawn as ``log10`` because the plain nets' loss spans orders of magnitude over the
wider range: on a linear scale its close-in shape would be a flat floor.

This module assembles the page and its summary sections (findings, recipe, degradation,
surfaces, surface metrics); ``html_analyses`` draws the per-net analyses and ``html_parts``
holds what both use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from landscape.report.html_analyses import (
    curvature_section,
    density_section,
    flow_section,
    sharpness_section,
)
from landscape.report.html_parts import Figures, esc, fmt, log10_rows, measured, pair_nets

METRIC_MEANINGS: dict[str, str] = {
    "sharpness": "Keskar ε-sharpness: % rise of the loss within radius 0.25 of the centre",
    "roughness": "mean |third difference| / value range: 0 on any locally quadratic surface",
    "convex_fraction": "share of grid points whose in-plane finite-difference Hessian is PSD",
    "nonconvexity": "mean |negative in-plane curvature| / largest in-plane curvature",
    "level_set_convexity": "sublevel sets' fill of their convex hull (1 = every set convex)",
    "local_minima": "grid points lower than all 8 neighbours (1 = a single basin)",
    "log10_loss_span": "orders of magnitude between the lowest and highest loss on the grid",
    "curvature_nonconvex": "share of curvature-map points with |λmin/λmax| > 0.1 (Li et al. §6)",
}


def _recipe_section(report: dict[str, Any]) -> str:
    recipe = report["recipe"]
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v))}</td></tr>" for k, v in recipe.items()
    )
    hw = report.get("hardware", {})
    return (
        "<section id='recipe'><h2>Recipe</h2><p>Fixed before any result was seen. "
        f"Measured on {esc(hw.get('cpu'))} ({esc(hw.get('cpu_cores'))} cores"
        f"{', ' + esc(hw['gpu']) if hw.get('gpu') else ''}); whole run "
        f"{report['wall_time_s']:.0f} s (cached steps cost nothing).{_precision(report)}</p>"
        f"<table>{rows}</table></section>"
    )


def _precision(report: dict[str, Any]) -> str:
    """The precision each part was computed in (reports written before it was recorded: none
    said)."""
    used = report.get("precision")
    if not used:
        return ""
    parts = ", ".join(f"{esc(part.replace('_', ' '))} {esc(p)}" for part, p in used.items())
    return f" Computed in: {parts}."


def _findings_section(report: dict[str, Any]) -> str:
    """The headline numbers first, computed from the sections below (report_findings.py)."""
    found = report.get("findings")
    if not found:
        return ""
    degradation = "".join(
        f"<li>{esc(d['pair'][0])} vs {esc(d['pair'][1])}: training loss "
        f"{fmt(d['skip_train_loss'], 3)} vs {fmt(d['plain_train_loss'], 3)}, test accuracy "
        f"{fmt(d['skip_test_acc'], 3)} vs {fmt(d['plain_test_acc'], 3)}"
        f"{'; training loss: ' + esc(d['reading']) if d.get('reading') else ''}</li>"
        for d in found["degradation"]
    )
    columns = sorted(
        {(tuple(r["pair"]), r["half_width"]) for r in found["metric_rankings"]},
        key=lambda c: (report["recipe"]["pairs"].index(list(c[0])), c[1]),
    )
    head = (
        "<tr><th>metric</th>"
        + "".join(f"<th>{esc(p[1])} vs {esc(p[0])}, ±{h:g}</th>" for p, h in columns)
        + "<th>yes / decided</th></tr>"
    )
    cells: dict[str, dict[tuple[Any, float], dict[str, Any]]] = {}
    for r in found["metric_rankings"]:
        cells.setdefault(r["metric"], {})[(tuple(r["pair"]), r["half_width"])] = r
    mark = {True: "yes", False: "no", None: "–"}
    body = ""
    for metric, row in cells.items():
        body += f"<tr><th>{esc(metric)}</th>"
        for column in columns:
            r = row.get(column)
            body += (
                "<td>–</td>"
                if r is None
                else f"<td>{mark[r['plain_rougher']]} "
                f"({fmt(r['plain'], 3)} vs {fmt(r['skip'], 3)})</td>"
            )
        decided = [r["plain_rougher"] for r in row.values() if r["plain_rougher"] is not None]
        body += f"<td>{sum(decided)} / {len(decided)}</td></tr>"
    flow = "".join(
        f"<tr><th>{esc(f['net'])}</th><td>{fmt(f['init'], 3)}{_reading(f, 'init')}</td>"
        f"<td>{fmt(f['trained'], 3)}{_reading(f, 'trained')}</td>"
        f"<td>{fmt(f.get('init_through_time'), 3)}</td>"
        f"<td>{fmt(f.get('trained_through_time'), 3)}</td></tr>"
        for f in found["gradient_flow"]
    )
    return (
        "<section id='findings'><h2>Findings</h2><p>Read off the numbers below (first seed "
        f"for surfaces and analyses).</p>{_families_table(found.get('families', []))}"
        f"<h3>Degradation (mean over seeds)</h3>"
        f"<ul>{degradation}</ul><h3>Does each metric rank the plain net rougher?</h3>"
        "<p>Each cell: whether the plain net comes out rougher or less convex than its "
        "residual twin (values plain vs skip); a metric earns its place next to the pictures "
        "only where it says yes where the pictures do.</p>"
        f"<table>{head}{body}</table><h3>Gradient flow</h3><p>Mean ‖∂L/∂W‖ of the first "
        "quarter of layers over the last quarter: far below 1, the gradient fades toward the "
        "input; far above, it grows. For recurrent nets the same of ‖∂L/∂h_t‖ over the "
        "first and last quarter of the time steps.</p><table><tr><th>net</th>"
        "<th>layers, at initialization</th><th>layers, trained</th><th>time, at "
        f"initialization</th><th>time, trained</th></tr>{flow}</table></section>"
    )


def _reading(row: dict[str, Any], key: str) -> str:
    """`` (grows 286× toward the input)``: the words findings.flow_phrase made of the number."""
    reading = (row.get("reading") or {}).get(key)
    return f" ({esc(reading)})" if reading else ""


def _families_table(rows: list[dict[str, Any]]) -> str:
    """Per pair: does the identity path (a) lower the loss, (b) keep the gradient within a
    decade, (c) smooth the surface (findings.family_verdicts, whose rules say how)."""
    if not rows:
        return ""
    body = ""
    for r in rows:
        losses = r["train_loss"]
        loss = (
            "/".join(fmt(v, 3) for v in losses["skip"])
            + " vs "
            + "/".join(fmt(v, 3) for v in losses["plain"])
        )
        flow = "; ".join(
            f"{label}: {fmt(r['gradient_within_decade'][label])} "
            f"({fmt(ratio['skip'], 2)} vs {fmt(ratio['plain'], 2)})"
            for label, ratio in r["gradient_ratio"].items()
        )
        body += (
            f"<tr><th>{esc(r['family'])}</th><td>{esc(r['pair'][0])} vs "
            f"{esc(r['pair'][1])}</td><td>{fmt(r['lower_loss'])} ({loss})</td>"
            f"<td>{flow} over {esc(r['gradient_over'])}</td><td>{fmt(r['smoother'])} "
            f"({r['metrics_plain_rougher']} of {r['metrics_decided']})</td>"
            f"<td>{fmt(r.get('plain_sharpens_more'))} ({r.get('sharpness_plain_sharper', 0)} "
            f"of {r.get('sharpness_compared', 0)})</td></tr>"
        )
    return (
        "<h3>Across families: what the identity path does</h3><p>(a) every seed of the net "
        "with the identity path ends with a lower training loss than every seed of its twin "
        "(per-seed losses, identity path vs plain); (b) its first-quarter / last-quarter "
        "gradient ratio is within [0.1, 10] and its twin's is not (ratios, identity path vs "
        "plain); (c) more of the metric rows below rank the plain net rougher than smoother; "
        "(d) at most of the epochs after initialization where both were measured, the plain "
        "twin's λmax is the larger (epochs where it is, of those compared). The deeper pair "
        "of a family speaks for depth.</p><table>"
        "<tr><th>family</th><th>pair</th><th>(a) lower training loss</th><th>(b) gradient "
        "within a decade</th><th>(c) smoother surface</th><th>(d) plain twin sharper"
        f"</th></tr>{body}</table>"
    )


def _degradation_section(report: dict[str, Any]) -> str:
    head = "<tr><th>net</th><th>train loss</th><th>train acc</th><th>test loss</th>"
    head += "<th>test acc</th></tr>"
    n = len(report["recipe"]["seeds"])
    body = ""
    for row in report["degradation"]:
        cells = "".join(
            f"<td>{_mean_sd(row[k], n)}</td>"
            for k in ("train_loss", "train_acc", "test_loss", "test_acc")
        )
        body += f"<tr><th>{esc(row['model'])}</th>{cells}</tr>"
    spread = f"mean ± sample standard deviation over {n} seeds" if n > 1 else "1 seed (no spread)"
    return (
        "<section id='degradation'><h2>Degradation table</h2>"
        f"<p>Final numbers in eval mode over the whole split; {spread}. A deep plain net "
        "that trains worse than its shallower twin is the degradation problem (He et al. 2016).</p>"
        f"<table>{head}{body}</table></section>"
    )


def _mean_sd(stat: dict[str, Any], seeds: int) -> str:
    """``mean ± sd``, or the mean alone for one seed: "± 0" would claim a measured spread."""
    mean = fmt(stat["mean"])
    return f"{mean} ± {fmt(stat['std'], 2)}" if seeds > 1 else mean


def _surfaces_section(report: dict[str, Any], figs: Figures) -> str:
    parts = [
        "<section id='surfaces'><h2>Loss surfaces</h2><p>log10 of the training loss along two "
        "filter-normalized random directions (Li et al. 2018), per pair and range; the close "
        "range shows the plain net's non-convex shoulders, the wide one how far its loss "
        "climbs.</p>"
    ]
    nets = report["nets"]
    for skip, plain, k_skip, k_plain in pair_nets(report):
        for index, (half, n) in enumerate(report["recipe"]["ranges"]):
            parts.append(f"<h3>{esc(skip)} vs {esc(plain)}, ±{half:g} ({n}×{n})</h3>")
            low, high = _shared_log_range(nets, (k_skip, k_plain), index)
            row = []
            for model, key in ((skip, k_skip), (plain, k_plain)):
                if nets[key].get("diverged"):
                    row.append(f"<p class='fig'>{esc(model)}: training diverged</p>")
                    continue
                s = nets[key]["surfaces"][index]
                trace = {
                    "type": "contour",
                    "x": s["x"],
                    "y": s["y"],
                    "z": log10_rows(s["train_loss"]),
                    "colorscale": "Viridis",
                    "colorbar": {"title": {"text": "log10 loss"}},
                    "contours": {"coloring": "heatmap"},
                    # one colour range for the pair, as the page's compare view
                    **({"zmin": low, "zmax": high, "zauto": False} if low is not None else {}),
                }
                layout = {  # square cells, axes no wider than the grid; δ, η as on the page
                    "title": {"text": model},
                    "xaxis": {"title": {"text": "δ"}, "constrain": "domain"},
                    "yaxis": {"title": {"text": "η"}, "scaleanchor": "x", "constrain": "domain"},
                }
                row.append(figs.div([trace], layout, 440))
            parts.append(f"<div class='row'>{''.join(row)}</div>")
    parts.append("</section>")
    return "".join(parts)


def _shared_log_range(
    nets: dict[str, Any], keys: tuple[str, str], index: int
) -> tuple[float | None, float | None]:
    """The log10 training-loss range both surfaces of a pair are coloured on (the page's
    figure rules, ``landscape.plot.scale``), so equal colours mean equal losses."""
    from landscape.plot.scale import scale_for

    arrays = [
        np.asarray(nets[k]["surfaces"][index]["train_loss"], dtype=np.float64)
        for k in keys
        if not nets[k].get("diverged")
    ]
    return scale_for(arrays, "train_loss", log=True).range


def _metrics_section(report: dict[str, Any]) -> str:
    keys = ["sharpness", "roughness", "convex_fraction", "nonconvexity"]
    shape_keys = ["level_set_convexity", "local_minima", "log10_loss_span"]
    head = (
        "<tr><th>net</th><th>range</th>"
        + "".join(f"<th>{esc(k)}</th>" for k in [*keys, *shape_keys, "curvature_nonconvex"])
        + "</tr>"
    )
    body = ""
    for key, net in measured(report):
        for s in net["surfaces"]:
            m = s["metrics"]
            cells = [
                m.get(k) if k != "nonconvexity" else m.get("train_loss_nonconvexity") for k in keys
            ]
            cells += [s["shape"].get(k) for k in shape_keys]
            cells.append(
                net["curvature"]["nonconvex_fraction"] if s is net["surfaces"][0] else None
            )
            body += f"<tr><th>{esc(key)}</th><td>±{s['half_width']:g}</td>"
            body += "".join(f"<td>{fmt(c)}</td>" for c in cells) + "</tr>"
    meanings = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in METRIC_MEANINGS.items())
    return (
        "<section id='metrics'><h2>Metrics</h2><ul>" + meanings + "</ul>"
        f"<table>{head}{body}</table></section>"
    )


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:0.9em}.row{display:flex;flex-wrap:wrap;gap:1em}.fig{flex:1;
min-width:420px}"""


def render_report_html(report: dict[str, Any]) -> str:
    """The whole page as one string (Plotly inlined)."""
    from plotly.offline import get_plotlyjs

    figs = Figures()
    sections = [
        _findings_section(report),
        _recipe_section(report),
        _degradation_section(report),
        _surfaces_section(report, figs),
        _metrics_section(report),
        curvature_section(report, figs),
        density_section(report, figs),
        flow_section(report, figs),
        sharpness_section(report, figs),
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Skip vs plain: the report"
        f"</title><style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{esc(_title(report))}</h1>"
        + "".join(sections)
        + "<script>"
        + "\n".join(figs.scripts)
        + "</script></body></html>"
    )


def _title(report: dict[str, Any]) -> str:
    families = list(
        dict.fromkeys(r["family"] for r in report.get("findings", {}).get("families", []))
    )
    if families in ([], ["resnet"]):
        return "Skip connections vs plain nets, measured"
    return f"Identity paths vs plain twins ({', '.join(families)}), measured"


def write_report_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``render_report_html(report)`` to ``path`` (atomically) and return it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report_html(report), encoding="utf-8")
    tmp.replace(path)
    return path
