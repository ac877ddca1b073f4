"""A loss that is no longer finite, said where it happened and what to change.

A training whose loss went to NaN, and a surface that is NaN at θ or everywhere (a checkpoint
that had already diverged), are results nobody can use: they stop with ``DivergedError``
instead of finishing blank. A few non-finite points far from θ (overflow) stay a result.
"""

from __future__ import annotations

import math

import numpy as np

from landscape.errors import DivergedError
from landscape.specs import TrainSpec
from landscape.storage import Surface

FIX = "lower the learning rate{now}, or use another loss or optimizer"


def diverged_training(
    spec: TrainSpec, epoch: int, train_loss: float, test_loss: float
) -> DivergedError:
    """The error of an epoch (a ``gd`` step) that ended with a non-finite training or test
    loss (the test loss catches the last batch's step breaking the weights)."""
    which, value = (
        ("training", train_loss) if not math.isfinite(train_loss) else ("test", test_loss)
    )
    step = "step" if spec.optimizer == "gd" else "epoch"
    return DivergedError(
        f"training diverged in {step} {epoch} of {spec.epochs}: the {which} loss is {value} "
        f"({spec.loss}, {spec.optimizer}); " + FIX.format(now=f" (now {spec.lr:g})")
    )


def check_surface(surface: Surface) -> None:
    """Raise when a loss is non-finite at θ itself (the grid's origin) or at every computed
    point: the model has diverged and the grid holds no landscape."""
    axes = [a for a in (surface.z, surface.y, surface.x) if a is not None]
    # The origin's index on each axis; empty where 0 is not a grid coordinate.
    origin = tuple(np.flatnonzero(np.abs(a) <= 1e-9 * np.abs(a).max())[:1] for a in axes)
    computed = surface.computed
    for name in (m for m in surface.values if m.endswith("_loss")):
        finite = np.isfinite(surface.values[name])
        every_bad = computed.any() and not finite[computed].any()
        if not (every_bad or (computed[origin] & ~finite[origin]).any()):
            continue
        value = surface.values[name][computed & ~finite][0]
        where = "at every point" if every_bad else "at the checkpoint's own weights (the centre)"
        raise DivergedError(
            f"{name} is {value} {where}: the model has diverged (NaN or infinite weights or "
            "outputs), so there is no landscape to show; retrain it: " + FIX.format(now="")
        )
