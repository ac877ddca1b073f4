"""``analyze_gradient_flow``: a checkpoint's gradient flow at initialization and trained, the
one call the CLI and the API make; with a surface, stored as the file's ``gradient_flow/`` group.

The initialization is the model the checkpoint's training started from: the same zoo net and
arguments, built after ``torch.manual_seed(seed)`` with the training seed from the checkpoint's
metadata (0 when it records none), as ``train_model`` does. Progress is two steps (init,
trained); nothing is stored unless both finished. Both run in ``precision`` (the engine's
policy, ``auto`` as surfaces), recorded in each flow's settings and the group's attrs. For a
recurrent net each flow also holds ``‖∂L/∂h_t‖`` per time step
(``GradientFlow.time_grad_norm``, stored as ``<label>/time_grad_norm``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from landscape.analysis.gradient_flow import (
    DEFAULT_BATCH_SIZE,
    GROUP_NAME,
    GradientFlow,
    Mode,
    gradient_flow,
    group_contents,
)
from landscape.analysis.provenance import surface_of_checkpoint
from landscape.errors import CancelledError
from landscape.specs import DataSpec, DeviceName, LossName, Precision, Split, to_dict

FLOW_STEPS = 2  # init, trained


def analyze_gradient_flow(
    checkpoint: str | Path,
    data: DataSpec | None = None,
    surface: str | Path | None = None,
    *,
    split: Split = "train",
    loss: LossName | None = None,
    mode: Mode = "train",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceName = "auto",
    precision: Precision = "auto",
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, GradientFlow]:
    """``{"init": …, "trained": …}`` of the mean loss over ``data``'s ``split``; data and loss
    default to the surface's (else digits, cross-entropy), whose checkpoint must be this one."""
    from landscape import storage
    from landscape.data import load_data
    from landscape.engine.devices import resolve_device
    from landscape.models import build
    from landscape.sources.checkpoint import file_digest, load_checkpoint

    digest = file_digest(checkpoint)
    stored = surface_of_checkpoint(checkpoint, digest, surface)
    if stored is not None:
        data = data or stored.spec.data
        loss = loss or cast(LossName, stored.spec.loss)  # gradient_flow checks it
    data = data or DataSpec()
    loss = loss or "cross_entropy"

    def report(done: int) -> None:
        if on_progress is not None:
            on_progress(done, FLOW_STEPS)
        if done < FLOW_STEPS and should_stop is not None and should_stop():
            raise CancelledError(f"gradient flow stopped after {done} of {FLOW_STEPS} steps")

    report(0)
    target = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location=target)
    x, y = load_data(data, split)
    seed = int(meta.get("seed", 0))
    torch.manual_seed(seed)  # the initialization train_model starts from
    initial = build(str(meta["model"]), **meta["model_args"]).to(target)
    common: dict[str, Any] = {
        "mode": mode,
        "loss": loss,
        "batch_size": batch_size,
        "precision": precision,
    }
    flows = {"init": gradient_flow(initial, (x, y), **common)}
    report(1)
    flows["trained"] = gradient_flow(model, (x, y), **common)
    if surface is not None:
        provenance = {
            "checkpoint": Path(checkpoint).name,
            "checkpoint_sha256": digest,
            "split": split,
            "init_seed": seed,
            "precision": flows["trained"].settings["precision"],
            "data": {**to_dict(data), "data_root": None},
        }
        arrays, attrs = group_contents(flows, provenance)
        storage.write_group(surface, GROUP_NAME, arrays, attrs)
    report(FLOW_STEPS)
    return flows
