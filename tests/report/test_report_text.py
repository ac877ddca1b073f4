"""Report text that interprets a number is made from that number: synthetic gradient profiles
of each kind (exploding, flat, fading toward the input) get the words their ratio implies, a
skip/plain pair is coloured on one range with δ/η axes, and one seed prints no "± 0"."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from landscape.analysis.gradient_flow import _quarter_ratio
from landscape.report.findings import flow_phrase, gradient_flow_summary, loss_phrase
from landscape.report.html import _degradation_section, _surfaces_section
from landscape.report.html_parts import Figures


def _profile(kind: str, layers: int = 16) -> np.ndarray:
    """‖∂L/∂W‖ per layer, input first: growing, flat or fading toward the input."""
    depth = np.arange(layers)
    return {
        "explodes": 100.0 * 0.7**depth,  # largest at the input
        "flat": 1.0 + 0.1 * np.sin(depth),
        "fades": 0.01 * 1.4**depth,  # smallest at the input
    }[kind]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("explodes", r"^grows [\d.]+× toward the input$"), ("flat", r"^flat within 2×"),
     ("fades", r"^decays [\d.]+× toward the input$")],
)  # fmt: skip
def test_flow_words_follow_the_measured_profile(kind: str, expected: str) -> None:
    ratio = _quarter_ratio(_profile(kind), 0.25)
    phrase = flow_phrase(ratio)
    assert re.match(expected, phrase), phrase
    factor = float(re.findall(r"[\d.]+", phrase)[0])
    if kind == "explodes":
        assert factor == pytest.approx(ratio, rel=1e-2)
    if kind == "fades":
        assert factor == pytest.approx(1 / ratio, rel=1e-2)


def test_the_reported_plain56_ratio_reads_as_growth_not_decay() -> None:
    assert flow_phrase(286.0) == "grows 286× toward the input"
    assert flow_phrase(0.1) == "decays 10× toward the input"
    assert flow_phrase(None) == "no ratio"
    report = {
        "nets": {
            "plain/seed0": {"gradient_flow": {"init": {"input_to_output_ratio": 286.0},
                                              "trained": {"input_to_output_ratio": 0.77}}},
        }
    }  # fmt: skip
    (row,) = gradient_flow_summary(report)
    assert row["reading"] == {"init": "grows 286× toward the input",
                              "trained": "flat within 2× (ratio 0.77)"}  # fmt: skip
    assert loss_phrase(0.0094, 1.63).startswith("the plain net's is 173× higher")


def _report(seeds: list[int], low: float, high: float) -> dict[str, Any]:
    x = np.linspace(-1, 1, 5)
    bowl = x[None, :] ** 2 + x[:, None] ** 2

    def surface(lo: float, hi: float) -> dict[str, Any]:
        values = 10 ** (lo + (hi - lo) * bowl / bowl.max())
        return {"x": x.tolist(), "y": x.tolist(), "train_loss": values.tolist()}

    stat = {"mean": 0.72, "std": 0.0, "min": 0.72, "max": 0.72, "values": [0.72]}
    return {
        "recipe": {"pairs": [["resnet56", "resnet56-noshort"]], "seeds": seeds,
                   "ranges": [[1.0, 5]]},
        "nets": {"resnet56/seed0": {"surfaces": [surface(-0.1, 3.4)]},
                 "resnet56-noshort/seed0": {"surfaces": [surface(low, high)]}},
        "degradation": [{"model": m, **{k: stat for k in
                         ("train_loss", "train_acc", "test_loss", "test_acc")}}
                        for m in ("resnet56", "resnet56-noshort")],
    }  # fmt: skip


def test_a_pair_shares_one_colour_range_and_names_its_axes() -> None:
    figs = Figures()
    html = _surfaces_section(_report([0], 0.3, 4.5), figs)
    assert "resnet56 vs resnet56-noshort" in html
    figures = [
        json.loads(s.split("const f = ", 1)[1].split("; Plotly", 1)[0]) for s in figs.scripts
    ]
    assert len(figures) == 2
    ranges = {(f["data"][0]["zmin"], f["data"][0]["zmax"]) for f in figures}
    assert len(ranges) == 1  # the same colours mean the same loss in both
    (low, high) = ranges.pop()
    assert low == pytest.approx(-0.1) and high == pytest.approx(4.5)
    for f in figures:
        assert f["layout"]["xaxis"]["title"]["text"] == "δ"
        assert f["layout"]["yaxis"]["title"]["text"] == "η"


def test_one_seed_says_so_instead_of_plus_minus_zero() -> None:
    one = _degradation_section(_report([0], 0.3, 4.5))
    assert "± 0" not in one and "1 seed" in one
    three = _degradation_section(_report([0, 1, 2], 0.3, 4.5))
    assert "± 0" in three and "over 3 seeds" in three
