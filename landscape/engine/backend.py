"""Where chunks of grid points run: ``local`` (this process and its workers) or ``ray``.

Both return an evaluator with the ``GridEvaluator`` surface the surface driver uses:
``imap(chunks)`` yielding ``(chunk index, results)`` as chunks finish, ``describe()``, and
``close()`` / context manager. Values are identical whichever backend computes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from torch import Tensor, nn

from landscape.losses import Loss, LossFn
from landscape.specs import BackendName, EngineOptions, check_choice

Results = dict[str, np.ndarray]


class Evaluator(Protocol):
    def imap(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Evaluator: ...

    def __exit__(self, *exc: object) -> None: ...


def make_evaluator(
    model: nn.Module,
    directions: list[Mapping[str, Tensor]],
    data: Mapping[str, tuple[Tensor, Tensor]],
    *,
    loss: str | Loss | LossFn,
    options: EngineOptions,
    n_points: int | None = None,
) -> Evaluator:
    """The evaluator for ``options.backend``; imports Ray only when it is asked for.

    ``n_points`` (the points still to compute) lets the engine judge whether compiling pays."""
    check_choice("backend", options.backend, BackendName)
    if options.backend == "ray":
        from landscape.engine.ray_backend import RayEvaluator

        return RayEvaluator(
            model, directions, dict(data), loss=loss, options=options, n_points=n_points
        )
    from landscape.engine.evaluator import GridEvaluator

    return GridEvaluator(
        model, directions, dict(data), loss=loss, options=options, n_points=n_points
    )
