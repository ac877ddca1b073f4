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
    return {
        "model": model,
        "train_loss": {"mean": loss, "values": [loss]},
        "test_acc": {"mean": 1 - loss},
    }


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


def _flows(net: dict[str, Any], init: float, trained: float, over_time: bool = False) -> None:
    key = "through_time_ratio" if over_time else "input_to_output_ratio"
    for label, value in (("init", init), ("trained", trained)):
        flow = {"input_to_output_ratio": 1.0, "through_time_ratio": None, key: value}
        net["gradient_flow"][label] = flow


def _seeds(model: str, values: list[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    mean = sum(finite) / len(finite) if len(finite) == len(values) else None
    return {
        "model": model,
        "train_loss": {"mean": mean, "values": values},
        "test_acc": {"mean": None if mean is None else 1 - mean},
    }


def _lambdas(values: list[float]) -> list[dict[str, float]]:
    """λmax records at epochs 0, 5, 10, … as the report stores them."""
    return [{"epoch": 5 * i, "lambda_max": v, "loss": 1.0} for i, v in enumerate(values)]


def test_family_verdicts_follow_their_rules() -> None:
    """(a) seed ranges apart or not, (b) ratios inside [0.1, 10] or not, over layers or time
    steps, (c) the metric table's majority; a diverged net answers nothing it cannot."""
    x, y = np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-1, 1, 21))
    bowl = 0.1 + x**2 + y**2
    rippled = bowl + 0.3 * np.sin(9 * x) * np.sin(9 * y) + 0.4
    nets = {
        "highway-50": _net(bowl, [0.0], 1.0),
        "highway-50-noshort": _net(rippled, [-0.5], 1.0),
        "lstm": _net(bowl, [0.0], 1.0),
        "rnn": _net(bowl, [0.0], 1.0),
        "transformer-18": _net(bowl, [0.0], 1.0),
    }
    _flows(nets["highway-50"], init=0.9, trained=20.0)
    _flows(nets["highway-50-noshort"], init=0.001, trained=0.5)
    _flows(nets["lstm"], init=0.05, trained=0.5, over_time=True)
    _flows(nets["rnn"], init=0.006, trained=2.0, over_time=True)
    pairs = [
        ["highway-50", "highway-50-noshort"],
        ["lstm", "rnn"],
        ["transformer-18", "transformer-18-noresidual"],
    ]
    report = {
        "recipe": {"seeds": [0, 1], "pairs": pairs, "ranges": [[1.0, 21]]},
        "nets": {
            **{f"{m}/seed0": net for m, net in nets.items()},
            "transformer-18-noresidual/seed0": {"diverged": True},
        },
        "degradation": [
            _seeds("highway-50", [0.01, 0.02]),
            _seeds("highway-50-noshort", [0.5, 2.3]),
            _seeds("lstm", [0.1, 0.4]),
            _seeds("rnn", [0.3, 0.2]),
            _seeds("transformer-18", [0.3, 0.4]),
            _seeds("transformer-18-noresidual", [None, 2.3]),
        ],
    }
    # λmax at epochs 0, 5, 10, 15: the plain twin is sharper at 2 of the 3 epochs after
    # initialization (epoch 0 is not compared: a BN net's eval-mode Hessian there is no start)
    nets["highway-50"]["sharpness"] = _lambdas([9.0, 3.0, 2.5, 2.0])
    nets["highway-50-noshort"]["sharpness"] = _lambdas([0.1, 4.0, 6.0, 1.0])
    nets["lstm"]["sharpness"] = _lambdas([2.0, 3.0, 5.0])
    nets["rnn"]["sharpness"] = _lambdas([2.0, 4.0, 4.0])  # sharper at 1 of 2: a tie
    found = findings(report)
    highway, recurrent, transformer = found["families"]
    assert highway["plain_sharpens_more"] == "yes"
    assert (highway["sharpness_plain_sharper"], highway["sharpness_compared"]) == (2, 3)
    assert recurrent["plain_sharpens_more"] == "no difference"
    assert transformer["plain_sharpens_more"] is None  # no λmax along training stored
    assert transformer["sharpness_compared"] == 0
    summary = {r["net"]: r for r in found["sharpness"]}
    assert summary["highway-50/seed0"] == {
        "net": "highway-50/seed0", "init": 9.0, "last": 2.0, "peak": 3.0, "peak_epoch": 5,
    }  # fmt: skip
    assert summary["highway-50-noshort/seed0"]["peak_epoch"] == 10
    assert [r["family"] for r in found["families"]] == ["highway", "recurrent", "transformer"]
    assert highway["lower_loss"] == "yes" and highway["gradient_over"] == "layers"
    assert highway["gradient_within_decade"] == {"init": "yes", "trained": "no"}
    assert highway["smoother"] == "yes"
    assert highway["metrics_plain_rougher"] > highway["metrics_decided"] / 2
    assert recurrent["lower_loss"] == "no difference"  # 0.1..0.4 overlaps 0.2..0.3
    assert recurrent["gradient_over"] == "time steps"  # not the layer ratio of 1.0
    assert recurrent["gradient_ratio"]["init"] == {"skip": 0.05, "plain": 0.006}
    assert recurrent["gradient_within_decade"] == {"init": "no", "trained": "no difference"}
    assert recurrent["smoother"] is None and recurrent["metrics_decided"] == 0  # a tie
    assert transformer["lower_loss"] == "yes"  # a diverged seed counts as +∞
    assert transformer["gradient_within_decade"] == {"init": None, "trained": None}
    assert transformer["smoother"] is None
    assert not [r for r in found["metric_rankings"] if r["pair"] == pairs[2]]
    assert "transformer-18-noresidual/seed0" not in {f["net"] for f in found["gradient_flow"]}
    assert {f["net"]: f["init_through_time"] for f in found["gradient_flow"]}["lstm/seed0"] == 0.05
