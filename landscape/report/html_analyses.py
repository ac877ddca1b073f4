"""The report page's per-net analysis sections: curvature maps (Li et al. 2018 §6), the
Hessian's eigenvalue density (SLQ), gradient flow through depth and time, and λmax along
training (Cohen et al. 2021), each as Plotly figures beside a short reading."""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape.report.html_parts import (
    Figures,
    esc,
    fmt,
    measured,
    measured_pair,
    pair_nets,
)


def curvature_section(report: dict[str, Any], figs: Figures) -> str:
    steps = report["recipe"].get("curvature_steps")
    method = (
        f"{steps} Lanczos steps per point (full reorthogonalization; each end's residual "
        "norm is in report.json)"
        if steps
        else "ARPACK Lanczos per point"
    )
    parts = [
        "<section id='curvature'><h2>Curvature maps</h2><p>|min(λmin, 0)| / λmax of the "
        "full Hessian at a sub-grid of the close range (Li et al. 2018 Fig. 7): 0 is "
        "convex in every direction, large is a saddle the plane hides. Extremes by "
        f"{esc(method)}.</p><div class='row'>"
    ]
    for key, net in measured(report):
        c = net["curvature"]
        low, high = np.asarray(c["lambda_min"], float), np.asarray(c["lambda_max"], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(high > 0, np.abs(np.minimum(low, 0)) / high, np.nan)
        z = [[float(a) if np.isfinite(a) else None for a in row] for row in np.atleast_2d(ratio)]
        trace = {
            "type": "heatmap",
            "x": c["x"],
            "y": c["y"],
            "z": z,
            "zmin": 0,
            "colorscale": "Cividis",
            "colorbar": {"title": {"text": "ratio"}},
        }
        parts.append(figs.div([trace], {"title": {"text": key}}, 320))
    parts.append("</div></section>")
    return "".join(parts)


def density_section(report: dict[str, Any], figs: Figures) -> str:
    parts = [
        "<section id='spectra'><h2>Hessian eigenvalue density</h2><p>Stochastic Lanczos "
        "quadrature (Ghorbani et al. 2019) on a fixed training subset; probes, steps and "
        "seed are in report.json. Density on a log axis.</p><div class='row'>"
    ]
    nets = report["nets"]
    for skip, plain, k_skip, k_plain in pair_nets(report):
        traces = []
        for model, key in measured_pair(nets, skip, plain, k_skip, k_plain):
            d = nets[key]["density"]
            floor = max(d["density"]) * 1e-6  # log axis: cut the Gaussian tails' zeros
            dens = [max(v, floor) for v in d["density"]]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": d["grid"],
                    "y": dens,
                    "name": f"{model} (λmax {nets[key]['hessian']['top_eigenvalues'][0]:.3g})",
                }
            )
        layout = {
            "title": {"text": f"{skip} vs {plain}"},
            "xaxis": {"title": {"text": "λ"}},
            "yaxis": {"type": "log", "title": {"text": "density"}},
        }
        parts.append(figs.div(traces, layout))
    parts.append("</div></section>")
    return "".join(parts)


# (gradient_flow entry, x axis, title suffix): over layers, and over time for recurrent nets
FLOW_SERIES = (("grad_norm", "depth", ""), ("time_grad_norm", "step", ", through time"))


def flow_section(report: dict[str, Any], figs: Figures) -> str:
    parts = [
        "<section id='gradient-flow'><h2>Gradient flow</h2><p>‖∂L/∂W‖ per conv/linear "
        "layer over depth (1 = input), at initialization and trained, log scale: the "
        "identity shortcut's 'highway' (He et al. 2016) as data. For recurrent nets also "
        "‖∂L/∂h_t‖ per time step (1 = first row): the gradient through time (Bengio et al. "
        "1994; Hochreiter &amp; Schmidhuber 1997).</p><div class='row'>"
    ]
    nets = report["nets"]
    for skip, plain, k_skip, k_plain in pair_nets(report):
        pair = measured_pair(nets, skip, plain, k_skip, k_plain)
        for series, axis, suffix in FLOW_SERIES:
            traces = []
            for model, key in pair:
                for label in ("init", "trained"):
                    values = nets[key]["gradient_flow"][label].get(series)
                    if values is None:  # no time steps in a feedforward net
                        continue
                    traces.append(
                        {
                            "type": "scatter",
                            "mode": "lines+markers",
                            "x": list(range(1, len(values) + 1)),
                            "y": values,
                            "name": f"{model} {label}",
                            "line": {"dash": "solid" if model == skip else "dash"},
                        }
                    )
            if traces:
                layout = {
                    "title": {"text": f"{skip} vs {plain}{suffix}"},
                    "xaxis": {"title": {"text": axis}},
                    "yaxis": {"type": "log", "title": {"text": "gradient norm"}},
                }
                parts.append(figs.div(traces, layout, 400))
    parts.append("</div></section>")
    return "".join(parts)


def sharpness_section(report: dict[str, Any], figs: Figures) -> str:
    """λmax along training per pair (progressive sharpening, Cohen et al. 2021), log scale."""
    rows = (report.get("findings") or {}).get("sharpness") or []
    if not rows:
        return ""
    table = "".join(
        f"<tr><th>{esc(r['net'])}</th><td>{fmt(r['init'], 3)}</td>"
        f"<td>{fmt(r['peak'], 3)} (epoch {fmt(r['peak_epoch'])})</td>"
        f"<td>{fmt(r['last'], 3)}</td></tr>"
        for r in rows
    )
    parts = [
        "<section id='sharpness'><h2>Sharpness along training</h2><p>λmax, the top Hessian "
        "eigenvalue of the training loss on the Hessian's images, at the snapshots of the "
        "first seed's training (epoch 0 = initialization), each Lanczos run warm-started from "
        "the last eigenvector. Under full-batch gradient descent with step η it rises until "
        "about 2/η (Cohen et al. 2021); this recipe is SGD with momentum and a cosine "
        "schedule, so no fixed threshold is drawn: the question is which twin is sharper. "
        "The Hessian is taken in eval mode, where a BN net at epoch 0 still has its initial "
        "running statistics, so its λmax there is not comparable with later ones.</p><table>"
        "<tr><th>net</th><th>λmax at initialization</th><th>peak after it</th>"
        f"<th>λmax trained</th></tr>{table}</table><div class='row'>"
    ]
    nets = report["nets"]
    for skip, plain, k_skip, k_plain in pair_nets(report):
        traces = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": [r["epoch"] for r in nets[key]["sharpness"]],
                "y": [r["lambda_max"] for r in nets[key]["sharpness"]],
                "name": model,
                "line": {"dash": "solid" if model == skip else "dash"},
            }
            for model, key in measured_pair(nets, skip, plain, k_skip, k_plain)
            if nets[key].get("sharpness")
        ]
        if traces:
            layout = {
                "title": {"text": f"{skip} vs {plain}"},
                "xaxis": {"title": {"text": "epoch"}},
                "yaxis": {"type": "log", "title": {"text": "λmax"}},
            }
            parts.append(figs.div(traces, layout, 360))
    parts.append("</div></section>")
    return "".join(parts)
