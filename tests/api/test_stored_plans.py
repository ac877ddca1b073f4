"""Every job kind's plan goes through one serializer, and rows stored by earlier versions
still load: ``stored_plans.json`` holds one plan of each kind exactly as the hand-written
serializers wrote it (a surface, an explored surface, a report, a Hessian analysis, a
sharpness and a gradient flow; only the data folder shortened to ``data/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.planning.gradient_flow import GradientFlowPlan
from api.planning.hessian import HessianPlan
from api.planning.report import ReportPlan
from api.planning.serialize import StoredPlan, StoredPlanError
from api.planning.sharpness import SharpnessPlan
from api.planning.surface import Plan
from landscape.explore.spec import EstimateSpec
from landscape.specs import (
    AnalysisSpec,
    DataSpec,
    DirectionSpec,
    EngineOptions,
    GridSpec,
    SurfaceSpec,
    TrainSpec,
    to_dict,
)

STORED: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "stored_plans.json").read_text()
)
KINDS: dict[str, type[StoredPlan]] = {
    "surface": Plan,
    "surface_estimate": Plan,
    "report": ReportPlan,
    "hessian": HessianPlan,
    "sharpness": SharpnessPlan,
    "gradient_flow": GradientFlowPlan,
}
DATA = DataSpec(name="digits", train_size=64)
TRAIN = TrainSpec(model="mlp-plain", data=DataSpec(name="digits", train_size=200), epochs=1)


def _surface(estimate: EstimateSpec | None = None, train: TrainSpec | None = TRAIN) -> Plan:
    spec = SurfaceSpec(
        checkpoint="data/checkpoints/c.pt",
        data=DataSpec(name="digits", train_size=200),
        grid=GridSpec(x_range=(-1.0, 1.0), n_x=5, y_range=(-0.5, 0.5), n_y=3),
        directions=DirectionSpec(seed=3),
    )
    return Plan(
        "s1", spec, train, "fp32", "c", Path("data/checkpoints/c.pt"), Path("data/s1.h5"),
        "mlp-plain", "digits", "mlp-plain on digits", estimate, bool(estimate), "as asked",
    )  # fmt: skip


PLANS: list[Any] = [
    _surface(),
    _surface(EstimateSpec(target=0.1, seed=2), train=None),
    ReportPlan("r1", Path("data/reports/r1"), {"pairs": [["a", "b"]], "seeds": [0]}, 6, None),
    HessianPlan("s1", Path("s1.h5"), AnalysisSpec(checkpoint="c.pt", top=3, data=DATA), 2),
    SharpnessPlan("s1", Path("s1.h5"), "c.pt", ("epoch_1.pt", "epoch_2.pt"), DATA, "mse", "tf32"),
    GradientFlowPlan("s1", Path("s1.h5"), "c.pt", DATA, "train", None),
]


def test_every_plan_kind_is_pinned_and_round_tripped() -> None:
    assert set(KINDS.values()) == set(StoredPlan.__subclasses__())
    assert {type(plan) for plan in PLANS} == set(KINDS.values())


@pytest.mark.parametrize("plan", PLANS, ids=lambda plan: type(plan).__name__)
def test_a_plan_survives_its_row(plan: Any) -> None:
    row = json.loads(json.dumps(plan.to_json()))  # the database stores JSON text
    assert type(plan).from_json(row) == plan


def _kept(stored: Any, written: Any, where: str = "") -> list[str]:
    """Where ``written`` lost or changed a value of ``stored``; keys a library spec gained
    since (fields with their defaults) are allowed."""
    if isinstance(stored, dict) and isinstance(written, dict):
        return [p for key in stored for p in _kept(stored[key], written.get(key), f"{where}.{key}")]
    return [] if stored == written else [f"{where}: {stored!r} -> {written!r}"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_todays_rows_load_and_are_written_back_unchanged(kind: str) -> None:
    plan = KINDS[kind].from_json(STORED[kind])
    written = json.loads(json.dumps(plan.to_json()))  # the database stores JSON text
    assert set(written) == set(STORED[kind])
    assert not _kept(STORED[kind], written)


def test_stored_values_come_back_typed() -> None:
    surface = Plan.from_json(STORED["surface_estimate"])
    assert surface.surface_path == Path("data/surfaces/14fe25f0f1dd2e2caa58.h5")
    assert surface.surface_spec.grid.x_range == (-1.0, 1.0) and surface.surface_spec.grid.n_x == 7
    assert surface.estimate == EstimateSpec(target=0.1)
    assert surface.train_spec is not None and surface.train_spec.device == "auto"  # the worker's
    hessian = HessianPlan.from_json(STORED["hessian"])
    expected = AnalysisSpec(checkpoint="c.pt", top=3, trace_samples=4, data=DATA)
    assert hessian == HessianPlan("s1", Path("s1.h5"), expected, 2)
    sharpness = SharpnessPlan.from_json(STORED["sharpness"])
    assert sharpness.snapshots == ("epoch_1.pt", "epoch_2.pt") and sharpness.data == DATA
    report = ReportPlan.from_json(STORED["report"])
    assert report.out_dir == Path("data/reports/321cccb6578f34b9") and report.steps == 6


def test_rows_of_earlier_versions_load() -> None:
    """Before the split a surface's row held the API's engine options and training device;
    older analysis and report rows had no precision, and no explore fields."""
    surface = {
        k: v
        for k, v in STORED["surface"].items()
        if k not in {"precision", "estimate", "make_exact", "mode_reason"}
    }
    surface["engine"] = to_dict(EngineOptions(device="cpu", precision="bf16", workers=2))
    surface["train_spec"] = {**surface["train_spec"], "device": "cpu"}
    plan = Plan.from_json(surface)
    assert (plan.precision, plan.estimate, plan.make_exact, plan.mode_reason) == (
        "bf16",
        None,
        False,
        "",
    )
    assert "engine" not in plan.to_json() and "device" not in plan.to_json()["train_spec"]
    flow = {**STORED["gradient_flow"], "device": "cuda"}
    del flow["precision"]
    assert GradientFlowPlan.from_json(flow).precision is None
    for kind, cls in (("report", ReportPlan), ("sharpness", SharpnessPlan)):
        old = {k: v for k, v in STORED[kind].items() if k != "precision"}
        assert cls.from_json(old).precision is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": None}, r"HessianPlan has no 'steps'"),
        ({"steps": "2"}, r"HessianPlan\.steps is stored as '2', not int"),
        ({"steps": True}, r"HessianPlan\.steps is stored as True, not int"),
        ({"surface_path": 3}, r"HessianPlan\.surface_path is stored as 3, not str"),
        ({"spec": ["c.pt"]}, r"HessianPlan\.spec is stored as \['c\.pt'\], not dict"),
    ],
)
def test_a_row_this_version_cannot_read_names_the_field(
    change: dict[str, Any], message: str
) -> None:
    row = {**STORED["hessian"], **change}
    row = {k: v for k, v in row.items() if v is not None}
    with pytest.raises(StoredPlanError, match=message):
        HessianPlan.from_json(row)
