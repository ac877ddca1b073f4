"""How close the queue's time estimates are: a fixed mix of every job kind, estimate vs real.

Runs each job of ``MIX`` through the service (a fresh data folder, the deployment's default
settings on the CPU), one at a time so no job slows another, and prints per job the FLOPs
its time is estimated from (the expected work: a Lanczos run at its expected products, not
the cap the budgets count), the time the queue estimated for it before any job had finished
here (the prior of its kind, ``api/schedule.py``), the time it ran, and their ratio
(estimate / real: above 1 it was over-estimated). The last column says whether the express
lane would have taken it. Times measured on a loaded machine are noisier than the ratios'
spread between kinds.

    python -m bench.estimates [--data-dir DIR] [--json FILE] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from api.db import Job
from api.schedule import QueuePolicy, Throughput, express_eligible
from api.settings import Settings
from api.worker import Worker
from landscape.engine.plan import cpu_model

FORM = {  # what the web form sends by default for an 11×11 surface (README)
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 30},
    "grid": {"nx": 11, "ny": 11},
    "directions": {"kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0},
}
TINY_SURFACE = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 1},
    "train_size": 200,
    "grid": {"nx": 5, "ny": 5},
}
PCA = {  # per-epoch snapshots: the sharpness job below reads them
    "model": "highway-100",
    "dataset": "digits",
    "train": {"epochs": 5},
    "train_size": 400,
    "grid": {"nx": 9, "ny": 9},
    "directions": {"kind": "pca"},
}
HESSIAN = {"train_size": 200}  # the analyses' subset: a few minutes for the whole mix
# (name, label, path of the request, body): "{form}" and "{pca}" stand for those surfaces'
# ids; the name is what ``--only`` picks a job by.
MIX: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("tiny", "surface, tiny (1 epoch, 5×5, 200 images)", "/api/surfaces", TINY_SURFACE),
    ("form", "surface, the form's 11×11 (30 epochs)", "/api/surfaces", FORM),
    (
        "form-21",
        "surface, 21×21 of the trained net",
        "/api/surfaces",
        {**FORM, "grid": {"nx": 21, "ny": 21}},
    ),
    (
        "volume",
        "surface, 16³ volume (32 images)",
        "/api/surfaces",
        {**FORM, "train_size": 32, "grid": {"dim": 3, "nx": 16, "ny": 16, "nz": 16}},
    ),
    (
        "hessian-directions",
        "surface, Hessian directions 7×7",
        "/api/surfaces",
        {**FORM, "grid": {"nx": 7, "ny": 7}, "directions": {"kind": "hessian"}},
    ),
    ("highway-pca", "surface, highway-100 PCA (5 epochs)", "/api/surfaces", PCA),
    (
        "rnn",
        "surface, rnn 9×9 (3 epochs)",
        "/api/surfaces",
        {**FORM, "model": "rnn", "train": {"epochs": 3}, "grid": {"nx": 9, "ny": 9}},
    ),
    (
        "hessian-top10",
        "hessian, top 10",
        "/api/surfaces/{form}/hessian",
        {"top": 10, "bottom": 0, **HESSIAN},
    ),
    (
        "curvature-map",
        "hessian, 3×3 curvature map (20 steps)",
        "/api/surfaces/{form}/hessian",
        {"top": 1, "bottom": 0, "curvature_grid": 3, "curvature_steps": 20, **HESSIAN},
    ),
    (
        "trace-density",
        "hessian, trace and density",
        "/api/surfaces/{form}/hessian",
        {"top": 0, "bottom": 0, "trace": True, "density_probes": 2, "density_steps": 30, **HESSIAN},
    ),
    ("gradient-flow", "gradient flow", "/api/surfaces/{form}/gradient-flow", {}),
    ("sharpness", "sharpness, 5 snapshots", "/api/surfaces/{pca}/sharpness", HESSIAN),
    (
        "report-mlp",
        "report, mlp pair (1 epoch)",
        "/api/reports",
        {
            "pairs": [["mlp-residual", "mlp-plain"]],
            "seeds": [0],
            "epochs": 1,
            "train_size": 96,
            "test_size": 48,
            "ranges": [[0.25, 3]],
            "model_args": {"depth": 2, "width": 8},
        },
    ),
    (
        "report-recurrent",
        "report, recurrent pair (2 epochs)",
        "/api/reports",
        {
            "family": "recurrent",
            "pairs": [["lstm", "rnn"]],
            "seeds": [0],
            "epochs": 2,
            "train_size": 200,
            "test_size": 100,
            "ranges": [[0.25, 5]],
        },
    ),
)


@dataclass
class Row:
    label: str
    kind: str
    flops: float
    estimate_s: float
    real_s: float
    express: bool

    @property
    def ratio(self) -> float:
        return self.estimate_s / self.real_s


PROVIDES = {"form": "form", "highway-pca": "pca"}  # job name → the id placeholder it fills


def selected(only: Sequence[str] | None) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The jobs of ``MIX`` named in ``only`` (all when None), in ``MIX``'s order, with the
    surfaces they analyse run first (they are timed and printed too)."""
    names = [job[0] for job in MIX]
    if only is None:
        return list(MIX)
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise SystemExit(f"unknown job {', '.join(unknown)}; the jobs: {', '.join(names)}")
    wanted = set(only)
    for name, _label, path, _body in MIX:
        if name in wanted:
            wanted |= {job for job, key in PROVIDES.items() if "{" + key + "}" in path}
    return [job for job in MIX if job[0] in wanted]


def run_mix(data_dir: Path, only: Sequence[str] | None = None) -> Iterator[Row]:
    """Each job of ``MIX`` (``selected``) queued alone and run by one worker in this thread."""
    settings = Settings(data_dir=data_dir, workers=0, device="cpu", api_token=None)
    policy = QueuePolicy.from_settings(settings)
    prior = policy.assumed()
    ids: dict[str, str] = {}
    with TestClient(create_app(settings)) as client:
        state: Any = client.app.state  # type: ignore[attr-defined]
        worker = Worker(state.queue, state.settings, state.sessions)
        for name, label, path, body in selected(only):
            reply = client.post(path.format(**ids), json=body)
            if reply.status_code != 202:
                raise SystemExit(f"{label}: {reply.status_code} {reply.text}")
            job_id = reply.json()["job"]["id"]
            if not worker.run_once():
                raise SystemExit(f"{label}: no job to run")
            with state.sessions() as session:
                job = session.get(Job, job_id)
                assert job is not None
                if job.status != "done":
                    raise SystemExit(f"{label}: {job.status} {job.error}")
                if name in PROVIDES:
                    ids[PROVIDES[name]] = str(job.surface_id)
                yield _row(label, job, prior, policy)


def _row(label: str, job: Job, prior: Throughput, policy: QueuePolicy) -> Row:
    kind = job.kind or "surface"
    flops = float(job.cost_flops or 0.0)
    waiting = prior.waiting(job.id, 0.0, flops, kind)
    assert job.started_at is not None and job.finished_at is not None
    return Row(
        label=label,
        kind=kind,
        flops=flops,
        estimate_s=prior.seconds(flops, kind) or math.nan,
        real_s=job.finished_at - job.started_at,
        express=express_eligible(waiting, policy.express_max_seconds),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated job names to run (and the surfaces they analyse): "
        + ", ".join(job[0] for job in MIX),
    )
    args = parser.parse_args()
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    jobs = selected(only)  # an unknown name ends here, before anything runs
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="landscape-bench-estimates-"))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; data folder {data_dir}")
    print(f"{'job':42} {'FLOPs':>8} {'estimate':>9} {'real':>8} {'est/real':>8}  express")
    rows = []
    started = time.monotonic()
    for row in run_mix(data_dir, [job[0] for job in jobs]):
        rows.append(row)
        print(
            f"{row.label:42} {row.flops:8.2g} {row.estimate_s:8.1f}s {row.real_s:7.1f}s "
            f"{row.ratio:8.2f}  {'yes' if row.express else 'no'}",
            flush=True,
        )
    ratios = [row.ratio for row in rows]
    print(
        f"{len(rows)} jobs in {time.monotonic() - started:.0f} s; est/real from "
        f"{min(ratios):.2f} to {max(ratios):.2f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0 if all(0.5 <= r <= 2.0 for r in ratios) else 1


if __name__ == "__main__":
    raise SystemExit(main())
