"""The report's findings on analytic surfaces whose ranking is known: a bowl against a bowl
with ripples (the rougher one), through the real metric functions."""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape.analysis.shape_metrics import shape_metrics
from landscape.analysis.surface_metrics import surface_metrics
from landscape.report.findings import ROUGHER_WHEN_HIGHER, findings


def _net(values: np.ndarray, lambda_min: list[float], flow: float) -> dict[str, Any]:
    x = y = np.linspace(-1, 1, values.shape[0])
    metrics = surface_metrics(x, y, {"train_loss": values}, ("train_loss",))
    surface = {"half_width": 1.0, "n": len(x), "metrics": metrics, "shape": shape_metrics(values)}
    return {
        "surfaces": [surface],
        "curvature": {"nonconvex_fraction": float(np.mean(np.asarray(lambda_min) < -0.1))},
        "gradient_flow": {
            "init": {"input_to_output_ratio": flow},
            "trained": {"input_to_output_ratio": flow / 2},
        },
    }


def _row(model: str, loss: float) -> dict[str, Any]:
    return {"model": model, "train_loss": {"mean": loss}, "test_acc": {"mean": 1 - loss}}


def test_a_rippled_bowl_ranks_rougher_than_a_bowl() -> None:
    x, y = np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-1, 1, 21))
    bowl = 0.1 + x**2 + y**2
    rippled = bowl + 0.3 * np.sin(9 * x) * np.sin(9 * y) + 0.4
    report = {
        "recipe": {"seeds": [0], "pairs": [["skip", "plain"]], "ranges": [[1.0, 21]]},
        "nets": {
            "skip/seed0": _net(bowl, [0.0, -0.01], 0.9),
            "plain/seed0": _net(rippled, [-0.5, -0.01], 300.0),
        },
        "degradation": [_row("skip", 0.01), _row("plain", 1.5)],
    }
    found = findings(report)
    ranks = {r["metric"]: r for r in found["metric_rankings"]}
    assert set(ranks) == set(ROUGHER_WHEN_HIGHER)
    for metric in ("roughness", "convex_fraction", "nonconvexity", "level_set_convexity",
                   "local_minima", "curvature_nonconvex"):  # fmt: skip
        assert ranks[metric]["plain_rougher"] is True, ranks[metric]
    assert ranks["level_set_convexity"]["skip"] == 1.0
    assert ranks["local_minima"]["skip"] == 1.0 and ranks["local_minima"]["plain"] > 1
    assert found["degradation"][0]["plain_train_loss"] == 1.5
    assert {f["net"]: f["init"] for f in found["gradient_flow"]}["plain/seed0"] == 300.0

    report["nets"]["plain/seed0"] = report["nets"]["skip/seed0"]  # the same surface: a tie
    assert all(r["plain_rougher"] is None for r in findings(report)["metric_rankings"])
