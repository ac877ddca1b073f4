"""What a skip-vs-plain report's numbers say, read off the numbers themselves.

Li et al. 2018 show the pictures: with shortcuts a smooth bowl, without them (at depth) a
chaotic surface. A metric is only worth printing beside those pictures if it *ranks the pair
the way the pictures do*, so for every pair, range and metric this module records both values
and whether the plain net comes out rougher; the report shows the table, whichever way each
row comes out. Nothing here is tuned to a result: the direction of every metric (is higher
rougher?) is fixed by its definition (docs/metrics.md).
"""

from __future__ import annotations

import math
from typing import Any

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


def gradient_flow_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per net: mean ‖∂L/∂W‖ of the first quarter of layers over that of the last quarter, at
    initialization and trained (≪ 1: the gradient fades toward the input; ≫ 1: it grows)."""
    rows = []
    for key, net in report["nets"].items():
        flow = net["gradient_flow"]
        rows.append(
            {
                "net": key,
                "init": flow["init"].get("input_to_output_ratio"),
                "trained": flow["trained"].get("input_to_output_ratio"),
            }
        )
    return rows


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
        }
        for skip, plain in report["recipe"]["pairs"]
    ]


def findings(report: dict[str, Any]) -> dict[str, Any]:
    """Everything above, as stored under ``report["findings"]``."""
    return {
        "degradation": degradation_summary(report),
        "metric_rankings": metric_rankings(report),
        "gradient_flow": gradient_flow_summary(report),
    }
