"""Surfaces of a model object and tensors, for notebooks: any ``nn.Module``, classification
or regression head, with the same file, resume and cache semantics as ``compute_surface`` --
it *is* ``compute_surface``, given a ``model_source.module_source``.

The module's key (``landscape.custom.model_key``) stands where a checkpoint's sha256 stands,
and the tensors' digest names the data, so the usual surface key applies unchanged: the same
module, weights and tensors resume (or return) the same file; anything else is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from landscape.custom import data_digest
from landscape.errors import SpecError
from landscape.model_source import module_source
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, LossName, SurfaceSpec
from landscape.surface import Progress, compute_surface


def compute_module_surface(
    model: nn.Module,
    data: Mapping[str, tuple[Tensor, Tensor]],
    out: str | Path,
    *,
    grid: GridSpec | None = None,
    directions: DirectionSpec | None = None,
    loss: LossName | None = None,
    options: EngineOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    label: str | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Compute (or finish) the surface of ``model`` on ``data`` (split name → ``(x, y)``).

    ``loss`` defaults to cross-entropy for class labels; regression takes ``"mse"`` (plain
    squared error; ``{split}_acc`` holds R²). Only random directions apply (the others name
    checkpoint files). ``label`` names the model in the file (default: its class name);
    ``extra_provenance`` adds root attrs (the ONNX loader's check report).
    """
    grid, directions = grid or GridSpec(), directions or DirectionSpec()
    if directions.kind != "random":
        raise SpecError("a model object takes random directions (the others name checkpoints)")
    source = module_source(model, data, label=label, extra_provenance=extra_provenance)
    loss = loss or ("mse" if source.task == "regression" else "cross_entropy")
    if source.task == "regression" and loss != "mse":
        raise SpecError(f"real-valued targets need loss 'mse', not {loss!r}")
    spec = SurfaceSpec(
        checkpoint=f"python:{source.provenance['model']}",
        data=DataSpec(name=f"tensors:{data_digest(source.data)[:20]}"),
        grid=grid,
        directions=directions,
        splits=tuple(source.data),  # type: ignore[arg-type]  # SurfaceSpec checks each name
        loss=loss,
    )
    return compute_surface(
        spec,
        out,
        options=options,
        on_progress=on_progress,
        should_stop=should_stop,
        source=source,
    )
