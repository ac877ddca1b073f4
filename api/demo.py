"""Demo surfaces queued by ``landscape serve --demo``: the paper's headline comparison.

Li et al. 2018 (Fig. 5) contrast ResNets with and without skip connections; on the small
``digits`` data set these train and evaluate in minutes on a laptop CPU. The 56-layer pair
(where the difference is dramatic) is queued last because it takes the longest.

The 56-layer pair is also queued over ±0.25 (31×31). Over ±1 the plain net's loss climbs a
million-fold away from its minimum, so the plot is only a steep funnel and the colour scale
hides its shape; over ±0.25 the 30-epoch resnet56-noshort shows as a narrow well inside a
non-convex, shouldered plateau while resnet56 stays a clean bowl: the range where the
contrast Li et al. describe is visible (docs/reproduce.md measures it).

30 epochs: with 1437 images that is only 360 SGD steps. At 10 epochs resnet56 itself is still
far from trained (train accuracy 0.35–0.48 over two seeds), which would show an unfinished
net, not the shortcut's effect; at 30 it reaches 0.95–0.98 while resnet56-noshort is at 0.70.

Each net trains with the reproduction report's recipe (``ReproduceSpec.train_spec``, seed 0):
the same optimizer, schedule and warm-up (one epoch at lr/10 for the 56-layer nets) as the
README's recipe, so a demo surface and the report's first seed are of the same net.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from api.planning.surface import plan_surface
from api.schemas.surface import SurfaceRequest
from landscape.report.recipe import ReproduceSpec

log = logging.getLogger(__name__)

DEMO_GRID: dict[str, Any] = {"nx": 21, "ny": 21, "xrange": [-1, 1], "yrange": [-1, 1]}
# Where the plain 56-layer net's non-convex shoulders show (see the module docstring).
CLOSE_GRID: dict[str, Any] = {"nx": 31, "ny": 31, "xrange": [-0.25, 0.25], "yrange": [-0.25, 0.25]}
DEMO_MODELS = ("resnet20", "resnet20-noshort", "resnet56", "resnet56-noshort")
CLOSE_MODELS = ("resnet56", "resnet56-noshort")
DEMO_EPOCHS = ReproduceSpec().epochs  # 30; presets send these requests (api/routes/config.py)
RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule")


def demo_recipe(model: str) -> dict[str, Any]:
    """The report's training recipe for ``model`` (seed 0), as a request's ``train``."""
    spec = ReproduceSpec().train_spec(model, seed=0)
    return {key: getattr(spec, key) for key in RECIPE_KEYS} | {"warmup_epochs": spec.warmup_epochs}


def demo_request(model: str, grid: dict[str, Any] = DEMO_GRID) -> SurfaceRequest:
    close = grid is CLOSE_GRID
    return SurfaceRequest.model_validate(
        {
            "model": model,
            "dataset": "digits",
            "train": demo_recipe(model),
            "grid": grid,
            "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
            "label": f"{model} on digits{', ±0.25' if close else ''} (demo)",
        }
    )


def demo_requests() -> list[SurfaceRequest]:
    """The ±1 grids of every model, then the 56-layer pair over ±0.25 (same checkpoints)."""
    return [demo_request(m) for m in DEMO_MODELS] + [
        demo_request(m, CLOSE_GRID) for m in CLOSE_MODELS
    ]


def enqueue_demo(app: FastAPI) -> list[str]:
    """Queue the demo surfaces not computed yet; returns their surface ids (cached ones too)."""
    settings, queue = app.state.settings, app.state.queue
    ids = []
    for request in demo_requests():
        with app.state.sessions() as session:
            plan = plan_surface(request, settings, session)
        ids.append(plan.surface_id)
        if plan.surface_path.exists() and queue.active_for(plan.surface_id) is None:
            from landscape.errors import SurfaceFileError
            from landscape.storage import read_surface, set_aside

            try:
                if read_surface(plan.surface_path).status == "complete":
                    continue
            except SurfaceFileError:
                set_aside(plan.surface_path)  # recomputed by the job queued below
        job, created = queue.submit(plan, request.model_dump(mode="json", exclude_none=True))
        log.info("demo %s: job %s (%s)", request.model, job.id, "new" if created else "shared")
    return ids
