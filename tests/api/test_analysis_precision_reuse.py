"""A stored gradient flow or λmax answers a request only when it was computed in the precision
the request would be computed in: a tf32 result never stands in for an fp32 one."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from api.planning.gradient_flow import GradientFlowPlan, flow_covers
from api.planning.sharpness import SharpnessPlan, sharpness_covers, sharpness_precision
from landscape.specs import DataSpec
from landscape.storage import Surface

DATA = DataSpec(name="digits", train_size=64)
SURFACE = cast(Surface, SimpleNamespace(attrs={"checkpoint_sha256": "abc"}))


def _flow_group(precision: str) -> tuple[dict[str, Any], dict[str, Any]]:
    flows = {
        stage: {"settings": {"mode": "eval", "precision": precision}}
        for stage in ("init", "trained")
    }
    attrs = {
        "checkpoint_sha256": "abc",
        "data": {"name": "digits", "train_size": 64},
        "flows": json.dumps(flows),
    }
    return {}, attrs


def _flow_plan(precision: str | None) -> GradientFlowPlan:
    return GradientFlowPlan("s", Path("s.h5"), "c.pt", DATA, "eval", precision)


def test_a_stored_flow_answers_only_its_own_precision() -> None:
    assert flow_covers(_flow_group("fp32"), _flow_plan("fp32"), SURFACE)
    assert not flow_covers(_flow_group("tf32"), _flow_plan("fp32"), SURFACE)
    assert not flow_covers(_flow_group("fp32"), _flow_plan("tf32"), SURFACE)


def test_the_flow_plan_round_trips_its_precision_and_reads_old_rows() -> None:
    plan = _flow_plan("tf32")
    assert GradientFlowPlan.from_json(plan.to_json()) == plan
    old = {k: v for k, v in plan.to_json().items() if k != "precision"}
    assert GradientFlowPlan.from_json(old).precision is None  # the worker's own, as before


def _sharpness(precision: str | None) -> SharpnessPlan:
    return SharpnessPlan(
        "s", Path("s.h5"), "c.pt", ("epoch_1.pt",), DATA, "cross_entropy", precision
    )


def test_a_stored_sharpness_answers_only_its_own_precision() -> None:
    attrs = {"checkpoint_sha256": "abc", "data": {"train_size": 64}, "snapshots": ["epoch_1.pt"]}
    group = ({}, {**attrs, "precision": "fp32"})
    assert sharpness_covers(group, _sharpness("fp32"), SURFACE)
    assert not sharpness_covers(({}, {**attrs, "precision": "tf32"}), _sharpness("fp32"), SURFACE)
    assert SharpnessPlan.from_json(_sharpness("tf32").to_json()).precision == "tf32"


def test_a_bf16_deployment_measures_sharpness_in_tf32() -> None:
    assert sharpness_precision("bf16") == "tf32"
    assert sharpness_precision("fp32") == "fp32"
