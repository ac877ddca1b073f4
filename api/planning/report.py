"""From a report request to a ``ReproduceSpec`` (``landscape.report.reproduce``), checked
against this server's caps; the route plans once, the runner executes the stored plan.

The recipe's precision (fp32 unless the request asks for another) is resolved for the workers'
compute device when planned, as a surface's is (tf32 for CPU workers: 422), and stored in the
recipe, so a worker computes what the report id names; a worker that cannot (a CPU worker given
a tf32 report) refuses the job (``api/runners/base.py``'s ``engine_options``). Every net's model
arguments are checked and the whole report is costed (``api/planning/cost.py``) before it is
queued; in the queue limits it counts as one job (its steps are what the budgets price).

A report's folder is made by its job when it starts (``write_recipe``) and removed again if the
job ends without output there (``discard_if_empty``), so a request alone leaves nothing on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.planning.budget import check_budget
from api.planning.common import check_dataset, declared_precision, stored_spec
from api.planning.cost import data_shape, net_cost, report_estimate
from api.planning.serialize import StoredPlan
from api.schemas.report import ReportRequest
from api.settings import Settings
from landscape.errors import SpecError
from landscape.report.recipe import FAMILIES, ReproduceSpec, family_spec
from landscape.specs import DataSpec

REPORT_DATASET = "digits"  # the recipe's data set; a report request does not choose another
RECIPE_FILE = "recipe.json"  # what the folder is for: written when its job starts
REPORT_FILE = "report.json"  # every number: written when the report is done


@dataclass(frozen=True)
class ReportPlan(StoredPlan):
    report_id: str
    out_dir: Path
    spec: dict[str, Any]  # ReproduceSpec.to_dict, less device and workers (the worker's)
    steps: int
    precision: str | None  # the recipe's, resolved; None in older rows (auto, then)


def report_steps(spec: ReproduceSpec) -> int:
    """``reproduce``'s progress units: one per training, per surface, per net's analysis."""
    surface_runs = len(spec.models) * spec.surface_seeds
    return int(len(spec.models) * len(spec.seeds) + surface_runs * (len(spec.ranges) + 1))


def plan_report(request: ReportRequest, settings: Settings) -> ReportPlan:
    """The recipe with the request's changes, checked against this server's caps, every net's
    model arguments and, unless the report is done already, the job budgets (422)."""
    from landscape.models import list_models

    known = {m.name for m in list_models()}
    for pair in request.pairs or ():
        for name in pair:
            if name not in known:
                raise SpecError(f"unknown model {name!r}; see GET /api/models")
    changes: dict[str, Any] = {}
    if request.pairs is not None:
        changes["pairs"] = tuple(tuple(p) for p in request.pairs)
    if request.seeds is not None:
        changes["seeds"] = tuple(request.seeds)
    if request.epochs is not None:
        changes["epochs"] = request.epochs
    if request.ranges is not None:
        changes["ranges"] = tuple(tuple(r) for r in request.ranges)
    if request.model_args is not None:
        merged = dict(FAMILIES[request.family].model_args) | request.model_args
        changes["model_args"] = tuple(sorted(merged.items()))
    if request.precision is not None:
        changes["precision"] = request.precision
    size_cap = settings.max_train_size
    if size_cap is not None and (request.train_size or size_cap + 1) > size_cap:
        raise SpecError(f"train_size must be given and at most {size_cap} on this server")
    resolved = check_dataset(REPORT_DATASET, settings)
    changes["data"] = DataSpec(
        name=REPORT_DATASET,
        data_root=resolved.data_root,
        train_size=request.train_size,
        test_size=request.test_size,
        download=resolved.download,
    )
    spec = family_spec(request.family, quick=request.quick, **changes)
    spec = dataclasses.replace(spec, precision=declared_precision(settings, spec.precision))
    if spec.epochs > settings.max_report_epochs:
        raise SpecError(
            f"epochs = {spec.epochs} is more than this server's limit of "
            f"{settings.max_report_epochs} for a report"
        )
    trainings = len(spec.models) * len(spec.seeds)
    if trainings > settings.max_report_trainings:
        raise SpecError(
            f"{len(spec.models)} nets × {len(spec.seeds)} seeds = {trainings} trainings is more "
            f"than this server's limit of {settings.max_report_trainings} for a report"
        )
    for _half, n in spec.ranges:
        if n * n > settings.max_grid_points:
            raise SpecError(
                f"a {n}×{n} surface is larger than this server's limit of "
                f"{settings.max_grid_points} points; use fewer points"
            )
    shape = data_shape(spec.data)
    nets = {model: net_cost(model, dict(spec.model_args), shape) for model in spec.models}
    recipe = stored_spec(spec)
    # the id's key holds the resolved precision, as it did before precision was a recipe value
    key = dict(recipe)
    key["data"] = {**recipe["data"], "data_root": None, "download": None}
    report_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    if not (settings.reports_dir / report_id / REPORT_FILE).exists():  # a done one is served
        check_budget(report_estimate(spec, nets, shape), settings)
    return ReportPlan(
        report_id=report_id,
        out_dir=settings.reports_dir / report_id,
        spec=recipe,
        steps=report_steps(spec),
        precision=spec.precision,
    )


def write_recipe(plan: ReportPlan) -> None:
    """Make the report's folder with its recipe (the job starting it)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / RECIPE_FILE).write_text(json.dumps(plan.spec, indent=1))


def discard_if_empty(folder: Path) -> None:
    """Remove a report folder holding nothing but its recipe (and the empty folders
    ``reproduce`` makes first): a job cancelled or failed before it wrote anything leaves
    nothing to resume from. A folder with a checkpoint, surface or partial training in it is
    kept, so requesting the report again resumes it (``DELETE /api/reports/{id}`` removes it)."""
    recipe = folder / RECIPE_FILE
    if any(p.is_file() and p != recipe for p in folder.rglob("*")):
        return
    shutil.rmtree(folder, ignore_errors=True)
