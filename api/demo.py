"""Demo surfaces queued by ``landscape serve --demo``: the paper's headline comparison.

Li et al. 2018 (Fig. 5) contrast ResNets with and without skip connections; on the small
``digits`` data set these train and evaluate in minutes on a laptop CPU. The 56-layer pair
(where the difference is dramatic) is queued last because it takes the longest.

30 epochs: with 1437 images that is only 360 SGD steps. At 10 epochs resnet56 itself is still
far from trained (train accuracy 0.35–0.48 over two seeds), which would show an unfinished
net, not the shortcut's effect; at 30 it reaches 0.95–0.98 while resnet56-noshort is at 0.70.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from api.planning import plan_surface
from api.schemas import SurfaceRequest

log = logging.getLogger(__name__)

DEMO_GRID: dict[str, Any] = {"nx": 21, "ny": 21, "xrange": [-1, 1], "yrange": [-1, 1]}
DEMO_MODELS = ("resnet20", "resnet20-noshort", "resnet56", "resnet56-noshort")
DEMO_EPOCHS = 30  # the same in web/js/presets.js, so presets open the demo's surfaces


def demo_requests() -> list[SurfaceRequest]:
    return [
        SurfaceRequest.model_validate(
            {
                "model": model,
                "dataset": "digits",
                "train": {"epochs": DEMO_EPOCHS},
                "grid": DEMO_GRID,
                "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
                "label": f"{model} on digits (demo)",
            }
        )
        for model in DEMO_MODELS
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
