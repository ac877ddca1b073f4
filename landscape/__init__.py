"""landscape: loss landscapes of neural nets along filter-normalized directions.

The notebook entry points, imported lazily so ``import landscape`` stays cheap::

    from landscape import build_model, load_dataset, load_checkpoint, compute_surface
"""

from __future__ import annotations

import importlib
from typing import Any

from landscape.errors import LandscapeError
from landscape.specs import (
    AnalysisSpec,
    DataSpec,
    DirectionSpec,
    EngineOptions,
    GridSpec,
    SurfaceSpec,
    TrainSpec,
)

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("landscape.models", "build"),
    "list_models": ("landscape.models", "list_models"),
    "load_dataset": ("landscape.data", "load_dataset"),
    "list_datasets": ("landscape.data", "list_datasets"),
    "load_checkpoint": ("landscape.sources.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("landscape.sources.checkpoint", "save_checkpoint"),
    "train_model": ("landscape.train", "train_model"),
    "make_directions": ("landscape.directions", "make_directions"),
    "GridEvaluator": ("landscape.engine.evaluator", "GridEvaluator"),
    "compute_surface": ("landscape.surface", "compute_surface"),
    "compute_module_surface": ("landscape.surface", "compute_module_surface"),
    "read_surface": ("landscape.storage", "read_surface"),
    "analyze": ("landscape.analysis.analyze", "analyze"),
    "gradient_flow": ("landscape.analysis.gradient_flow", "gradient_flow"),
    "ReproduceSpec": ("landscape.report.reproduce", "ReproduceSpec"),
    "reproduce": ("landscape.report.reproduce", "reproduce"),
    "Monitor": ("landscape.monitor", "Monitor"),
}

__all__ = [
    "AnalysisSpec",
    "DataSpec",
    "DirectionSpec",
    "EngineOptions",
    "GridSpec",
    "LandscapeError",
    "SurfaceSpec",
    "TrainSpec",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    return getattr(importlib.import_module(module_name), attribute)
