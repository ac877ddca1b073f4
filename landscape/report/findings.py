"""What a skip-vs-plain report's numbers say, read off the numbers themselves.

Li et al. 2018 show the pictures: with shortcuts a smooth bowl, without them (at depth) a
chaotic surface. A metric is only worth printing beside those pictures if it *ranks the pair
the way the pictures do*, so for every pair, range and metric this module records both values
and whether the plain net comes out rougher; the report shows the table, whichever way each
row comes out. Nothing here is tuned to a result: the direction of every metric (is higher
rougher?) is fixed by its definition (docs/metrics.md).

``family_verdicts`` asks the same three questions of every pair, whatever its family (ResNet,
highway, Transformer, recurrent): does the identity path (a) lower the final training loss,
(b) keep the gradient within an order of magnitude from the output back to the input (over
layers) or to the first step (over time), (c) make the surface smoother by these metrics; and
(d) is the plain twin sharper along training (λmax at the same epochs, Cohen et al. 2021).
Each answer is "yes", "no" or "no difference" by a rule fixed below, or None where a number
is missing (a net whose training diverged has no surface or gradient flow).
"""

from __future__ import annotations

import math
from typing import Any

from landscape.report.recipe import family_of

DECADE = 10.0  # (b): "within an order of magnitude" is a ratio in [1/10, 10]

# metric → True when a higher value means a rougher / less convex surface
ROUGHER_WHEN_HIGHER: dict[str, bool] = {
    "sharpness": True,
    "roughness": True,
    "convex_fraction": False,
    "nonconvexity": True,
    "level_set_convexity": False,
    "local_minima": True,
    "log10_loss_span": True,
    "curvature_nonconvex": True,
}


def surface_metric(net: dict[str, Any], index: int, name: str) -> float | None:
    """One metric of a net's ``index``-th surface (the curvature map is on the first range)."""
    surface = net["surfaces"][index]
    if name == "curvature_nonconvex":
        return net["curvature"]["nonconvex_fraction"] if index == 0 else None
    if name == "nonconvexity":
        value = surface["metrics"].get("train_loss_nonconvexity")
    elif name in surface["shape"]:
        value = surface["shape"][name]
    else:
        value = surface["metrics"].get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def metric_rankings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pair, range and metric: both values and ``plain_rougher`` (None when either value
    is missing or they tie, so a tie is never counted as agreement)."""
    nets = report["nets"]
    seed = report["recipe"]["seeds"][0]
    rows = []
    for skip, plain in report["recipe"]["pairs"]:
        net_skip, net_plain = nets[f"{skip}/seed{seed}"], nets[f"{plain}/seed{seed}"]
        if net_skip.get("diverged") or net_plain.get("diverged"):
            continue
        for index, (half, n) in enumerate(report["recipe"]["ranges"]):
            for name, higher_is_rougher in ROUGHER_WHEN_HIGHER.items():
                a = surface_metric(net_skip, index, name)
                b = surface_metric(net_plain, index, name)
                if a is None and b is None:
                    continue
                rougher = None
                if a is not None and b is not None and a != b:
                    rougher = (b > a) == higher_is_rougher
                rows.append(
                    {
                        "pair": [skip, plain],
                        "half_width": half,
                        "n": n,
                        "metric": name,
                        "skip": a,
                        "plain": b,
                        "plain_rougher": rougher,
                    }
                )
    return rows


FLAT_FACTOR = 2.0  # a first/last-quarter gradient ratio within [1/2, 2] reads as "flat"


def flow_phrase(ratio: float | None) -> str:
    """What a first-quarter / last-quarter gradient ratio says, worded from the number alone
    (a fixed sentence such as "a plain net's gradient decays toward the input" is contradicted
    by plain-56 at initialization, whose gradient grows 286× toward the input)."""
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return "no ratio"
    if ratio >= FLAT_FACTOR:
        return f"grows {ratio:.3g}× toward the input"
    if ratio <= 1 / FLAT_FACTOR:
        return f"decays {1 / ratio:.3g}× toward the input"
    return f"flat within {FLAT_FACTOR:g}× (ratio {ratio:.2g})"


def loss_phrase(skip: float | None, plain: float | None) -> str:
    """How the plain net's training loss compares with its identity-path twin's, in words."""
    if skip is None or plain is None or not (math.isfinite(skip) and math.isfinite(plain)):
        return "not comparable (a run diverged)"
    if skip <= 0 or plain <= 0:
        return "not comparable (a loss of 0)"
    factor = plain / skip
    if factor >= FLAT_FACTOR:
        return f"the plain net's is {factor:.3g}× higher"
    if factor <= 1 / FLAT_FACTOR:
        return f"the plain net's is {1 / factor:.3g}× lower"
    return f"within {FLAT_FACTOR:g}× of each other"


def gradient_flow_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per net: mean ‖∂L/∂W‖ of the first quarter of layers over that of the last quarter, at
    initialization and trained, each with its ``flow_phrase``."""
    rows = []
    for key, net in report["nets"].items():
        if net.get("diverged"):
            continue
        flow = net["gradient_flow"]
        row = {
            "net": key,
            "init": flow["init"].get("input_to_output_ratio"),
            "trained": flow["trained"].get("input_to_output_ratio"),
            "init_through_time": flow["init"].get("through_time_ratio"),
            "trained_through_time": flow["trained"].get("through_time_ratio"),
        }
        row["reading"] = {k: flow_phrase(row[k]) for k in ("init", "trained")}
        rows.append(row)
    return rows


def sharpness_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per net with λmax along training: at initialization, at the end, and its peak after
    initialization (with its epoch). The report's Hessian is taken in eval mode, where a BN
    net at epoch 0 still has its initial running statistics: λmax there is no start to
    measure a rise from, so comparisons use the snapshots after it."""
    rows = []
    for key, net in report["nets"].items():
        track = _track(net)
        if not track:
            continue
        later = [r for r in track if r["epoch"] > 0] or track
        peak = max(later, key=lambda r: r["lambda_max"])
        rows.append(
            {
                "net": key,
                "init": track[0]["lambda_max"] if track[0]["epoch"] == 0 else None,
                "last": track[-1]["lambda_max"],
                "peak": peak["lambda_max"],
                "peak_epoch": peak["epoch"],
            }
        )
    return rows


def _track(net: dict[str, Any]) -> list[dict[str, Any]]:
    """A net's λmax records with a value, in epoch order ([] for a diverged net)."""
    if net.get("diverged"):
        return []
    return [r for r in net.get("sharpness") or [] if r.get("lambda_max") is not None]


def _sharper(skip: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """(d): at each epoch after initialization both nets were measured at, is the plain
    twin's λmax the larger? "yes" when at most of them, "no" when at fewer than half,
    "no difference" at exactly half; None when no epoch compares."""
    a = {r["epoch"]: r["lambda_max"] for r in _track(skip) if r["epoch"] > 0}
    b = {r["epoch"]: r["lambda_max"] for r in _track(plain) if r["epoch"] > 0}
    epochs = sorted(set(a) & set(b))
    sharper = sum(b[e] > a[e] for e in epochs)
    verdict = None
    if epochs:
        verdict = (
            "no difference"
            if 2 * sharper == len(epochs)
            else ("yes" if 2 * sharper > len(epochs) else "no")
        )
    return {"verdict": verdict, "plain_sharper": sharper, "compared": len(epochs)}


def _sharpness_verdict(compared: dict[str, Any]) -> dict[str, Any]:
    return {
        "plain_sharpens_more": compared["verdict"],
        "sharpness_plain_sharper": compared["plain_sharper"],
        "sharpness_compared": compared["compared"],
    }


def degradation_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pair: mean final training loss with and without shortcuts (the degradation table's
    headline: a deep plain net that trains worse than its residual twin)."""
    table = {row["model"]: row for row in report["degradation"]}
    return [
        {
            "pair": [skip, plain],
            "skip_train_loss": table[skip]["train_loss"]["mean"],
            "plain_train_loss": table[plain]["train_loss"]["mean"],
            "skip_test_acc": table[skip]["test_acc"]["mean"],
            "plain_test_acc": table[plain]["test_acc"]["mean"],
            "reading": loss_phrase(
                table[skip]["train_loss"]["mean"], table[plain]["train_loss"]["mean"]
            ),
        }
        for skip, plain in report["recipe"]["pairs"]
    ]


def _lower_loss(skip: list[float | None], plain: list[float | None]) -> str:
    """(a): "yes" when every seed of the identity-path net ends below every seed of its twin,
    "no" the other way round, else "no difference"; a diverged run (None) counts as +∞."""
    a = [math.inf if v is None else v for v in skip]
    b = [math.inf if v is None else v for v in plain]
    if max(a) < min(b):
        return "yes"
    if max(b) < min(a):
        return "no"
    return "no difference"


def _flow_ratio(net: dict[str, Any], label: str) -> float | None:
    """The net's gradient ratio: over time steps for a recurrent net, else over layers."""
    if net.get("diverged"):
        return None
    flow = net["gradient_flow"][label]
    value = flow.get("through_time_ratio")
    if value is None:
        value = flow.get("input_to_output_ratio")
    return None if value is None or not math.isfinite(value) else float(value)


def _within_decade(skip: float | None, plain: float | None) -> str | None:
    """(b): "yes" when the identity-path net's ratio is within a decade and its twin's is not,
    "no difference" when both are, "no" when the identity-path net's is not."""
    if skip is None or plain is None:
        return None
    inside = [1 / DECADE <= r <= DECADE for r in (skip, plain)]
    if not inside[0]:
        return "no"
    return "no difference" if inside[1] else "yes"


def _smoother(rows: list[dict[str, Any]]) -> tuple[str | None, int, int]:
    """(c): "yes" when more decided metric rows rank the plain net rougher than smoother, "no"
    when fewer, "no difference" when as many; with the counts (rougher, decided)."""
    decided = [r["plain_rougher"] for r in rows if r["plain_rougher"] is not None]
    rougher = sum(decided)
    if not decided:
        return None, 0, 0
    if 2 * rougher == len(decided):
        return "no difference", rougher, len(decided)
    return ("yes" if 2 * rougher > len(decided) else "no"), rougher, len(decided)


def family_verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pair, in recipe order: its family and the three answers with the numbers behind
    them (the deeper pair of a family is the one that speaks for "at depth")."""
    table = {row["model"]: row for row in report["degradation"]}
    seed = report["recipe"]["seeds"][0]
    nets = report["nets"]
    rankings = metric_rankings(report)
    rows = []
    for skip, plain in report["recipe"]["pairs"]:
        losses = [table[m]["train_loss"]["values"] for m in (skip, plain)]
        net_skip, net_plain = nets[f"{skip}/seed{seed}"], nets[f"{plain}/seed{seed}"]
        over_time = not net_skip.get("diverged") and (
            net_skip["gradient_flow"]["init"].get("through_time_ratio") is not None
        )
        flow = {
            label: {
                "skip": _flow_ratio(net_skip, label),
                "plain": _flow_ratio(net_plain, label),
            }
            for label in ("init", "trained")
        }
        smoother, rougher, decided = _smoother([r for r in rankings if r["pair"] == [skip, plain]])
        rows.append(
            {
                "family": family_of(skip),
                "pair": [skip, plain],
                "lower_loss": _lower_loss(*losses),
                "train_loss": {"skip": losses[0], "plain": losses[1]},
                "gradient_over": "time steps" if over_time else "layers",
                "gradient_ratio": flow,
                "gradient_within_decade": {
                    label: _within_decade(ratios["skip"], ratios["plain"])
                    for label, ratios in flow.items()
                },
                "smoother": smoother,
                "metrics_plain_rougher": rougher,
                "metrics_decided": decided,
                **_sharpness_verdict(_sharper(net_skip, net_plain)),
            }
        )
    return rows


def findings(report: dict[str, Any]) -> dict[str, Any]:
    """Everything above, as stored under ``report["findings"]``."""
    return {
        "degradation": degradation_summary(report),
        "metric_rankings": metric_rankings(report),
        "gradient_flow": gradient_flow_summary(report),
        "sharpness": sharpness_summary(report),
        "families": family_verdicts(report),
    }
