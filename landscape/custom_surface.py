"""Surfaces of a model object and tensors, for notebooks: any ``nn.Module``, classification
or regression head, with the same file, resume and cache semantics as ``compute_surface``.

The module's key (``landscape.custom.model_key``) stands where a checkpoint's sha256 stands,
and the tensors' digest names the data, so the usual surface key applies unchanged: the same
module, weights and tensors resume (or return) the same file; anything else is refused.

Classification heads (integer targets) run on the engine, which folds BN when ``torch.fx``
can trace the module and batches grid points with ``torch.vmap`` when the module allows it;
whatever it cannot do is done the exact generic way, with the reason kept in the file
(``engine/fallbacks``). Regression heads (floating targets) use the generic per-point path:
the engine's losses are classification losses. Their ``{split}_acc`` holds R².
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, fx, nn
from torch.func import functional_call

from landscape import storage as store
from landscape.analysis.surface_metrics import surface_metrics
from landscape.custom import data_digest, model_key, module_description, weights_digest
from landscape.devices import resolve_device
from landscape.errors import CancelledError, SpecError
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, LossName, SurfaceSpec
from landscape.surface import (
    MAX_CHUNK_POINTS,
    TARGET_CHUNKS,
    Progress,
    plan_chunks,
)

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
Data = Mapping[str, tuple[Tensor, Tensor]]
Results = dict[str, np.ndarray]

REGRESSION_LOSS = "mean over samples of the mean squared error over outputs; acc holds R²"


def infer_task(data: Data) -> Task:
    """Integer targets are class labels; floating targets are regression targets."""
    kinds = {"regression" if y.is_floating_point() else "classification" for _, y in data.values()}
    if len(kinds) != 1:
        raise SpecError("all splits need targets of one kind: class labels or real values")
    return "regression" if kinds == {"regression"} else "classification"


def check_fits(model: nn.Module, data: Data, task: Task) -> None:
    """One forward pass on a copy (BN in train mode would change the model), so a mismatch is
    a clear error up front."""
    x, y = next(iter(data.values()))
    probe = copy.deepcopy(model).cpu().eval()
    try:
        with torch.inference_mode():
            out = probe(x[:2].float())
    except Exception as exc:
        raise SpecError(
            f"the model does not accept inputs of shape {tuple(x.shape[1:])}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(out, Tensor):
        raise SpecError(f"the model returns a {type(out).__name__}; a surface needs one tensor")
    if task == "classification":
        n_classes = int(y.max()) + 1 if len(y) else 0
        if out.dim() != 2 or out.shape[1] < n_classes:
            raise SpecError(
                f"the model outputs {tuple(out.shape[1:])} per sample; class labels up to "
                f"{n_classes - 1} need logits of shape (batch, >= {n_classes})"
            )
    elif out[0].numel() != y[0].numel():
        raise SpecError(
            f"the model outputs {tuple(out.shape[1:])} per sample but the targets are "
            f"{tuple(y.shape[1:])}"
        )


def plan_engine(
    model: nn.Module, data: Data, options: EngineOptions
) -> tuple[EngineOptions, list[str]]:
    """Options the engine can run this module with, and a line per exact fallback taken."""
    fallbacks: list[str] = []
    name = type(model).__name__
    try:
        fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            fallbacks.append(
                f"BN not folded: torch.fx cannot trace {name} ({type(exc).__name__}); "
                "BN runs as its own layer"
            )
    batching = options.points_per_call != 1 and (
        options.points_per_call is not None or resolve_device(options.device).type == "cuda"
    )
    if batching and (reason := _vmap_failure(model, data)) is not None:
        options = dataclasses.replace(options, points_per_call=1)
        fallbacks.append(f"one grid point per call: torch.vmap cannot batch {name} ({reason})")
    return options, fallbacks


def _vmap_failure(model: nn.Module, data: Data) -> str | None:
    """Why ``torch.vmap`` over the weights fails for this module (None when it works)."""
    probe = copy.deepcopy(model).cpu().eval()
    x = next(iter(data.values()))[0][:2].float()
    params = {n: torch.stack([p.detach()] * 2) for n, p in probe.named_parameters()}
    try:
        with torch.inference_mode():
            torch.vmap(lambda p: functional_call(probe, p, (x,)))(params)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None


class RegressionEvaluator:
    """The exact generic path: for each grid point, ``θ + Σ c_k d_k`` through
    ``functional_call`` over batches of each split; sums in float64. One process."""

    def __init__(
        self, model: nn.Module, directions: list[Mapping[str, Tensor]], data: Data,
        *, options: EngineOptions,
    ) -> None:  # fmt: skip
        start = time.perf_counter()
        self.device = resolve_device(options.device)
        self.module = copy.deepcopy(model).to(self.device).eval()
        self.params = {
            n: p.detach().to(self.device, torch.float32) for n, p in self.module.named_parameters()
        }
        self.buffers = {n: b.detach() for n, b in self.module.named_buffers()}
        self.dirs = [
            {n: d[n].to(self.device, torch.float32) for n in self.params} for d in directions
        ]
        self.batch_size = options.batch_size or 256
        self.splits: dict[str, tuple[list[tuple[Tensor, Tensor]], int, float]] = {}
        for split, (x, y) in data.items():
            y2 = y.reshape(len(y), -1).double()
            sst = float(((y2 - y2.mean(dim=0)) ** 2).sum())
            batches = [
                (
                    x[i : i + self.batch_size].to(self.device, torch.float32),
                    y2[i : i + self.batch_size].to(self.device),
                )
                for i in range(0, len(x), self.batch_size)
            ]
            self.splits[split] = (batches, y2.numel(), sst)
        self.prepare_s = time.perf_counter() - start
        self.eval_s = 0.0
        self.points_done = 0

    def imap(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        for index, chunk in enumerate(chunks):
            yield index, self.evaluate(chunk)

    def evaluate(self, coords: np.ndarray) -> Results:
        """``{split}_loss`` (MSE) and ``{split}_acc`` (R²) at each row of ``coords``."""
        start = time.perf_counter()
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(self.dirs))
        out = {f"{s}_{m}": np.empty(len(coords)) for s in self.splits for m in ("loss", "acc")}
        with torch.inference_mode():
            for i, point in enumerate(coords):
                weights = {}
                for n, p in self.params.items():
                    value = p.clone()
                    for c, d in zip(point, self.dirs, strict=True):
                        value.add_(d[n], alpha=float(c))
                    weights[n] = value
                for split, (batches, n_values, sst) in self.splits.items():
                    sse = 0.0
                    for xb, yb in batches:
                        pred = functional_call(self.module, {**weights, **self.buffers}, (xb,))
                        sse += float((pred.reshape(len(xb), -1).double() - yb).pow(2).sum())
                    out[f"{split}_loss"][i] = sse / n_values
                    out[f"{split}_acc"][i] = _r2(sse, sst)
        self.eval_s += time.perf_counter() - start
        self.points_done += len(coords)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "dtype": "float32",
            "method": "generic per-point (regression)",
            "bn_folded": 0,
            "points_per_call": 1,
            "batch_size": self.batch_size,
            "workers": 1,
            "timings": {
                "prepare_s": self.prepare_s,
                "eval_s": self.eval_s,
                "points": self.points_done,
            },
        }

    def close(self) -> None:
        """Nothing to release: one process, no workers."""

    def __enter__(self) -> RegressionEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _r2(sse: float, sst: float) -> float:
    """Coefficient of determination; constant targets score 1 when fitted exactly, else 0."""
    if sst > 0:
        return 1.0 - sse / sst
    return 1.0 if sse == 0 else 0.0


def compute_module_surface(
    model: nn.Module,
    data: Data,
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
    squared error, see ``REGRESSION_LOSS``). Only random directions apply (the others name
    checkpoint files). ``label`` names the model in the file (default: its class name);
    ``extra_provenance`` adds root attrs (the ONNX loader's check report).
    """
    grid, directions = grid or GridSpec(), directions or DirectionSpec()
    options = options or EngineOptions()
    if directions.kind != "random":
        raise SpecError("a model object takes random directions (the others name checkpoints)")
    data = {s: (x.detach().cpu(), y.detach().cpu()) for s, (x, y) in data.items()}
    task = infer_task(data)
    loss = loss or ("mse" if task == "regression" else "cross_entropy")
    if task == "regression" and loss != "mse":
        raise SpecError(f"real-valued targets need loss 'mse', not {loss!r}")
    key = model_key(model)  # before any forward pass
    check_fits(model, data, task)
    label = label or type(model).__name__
    spec = SurfaceSpec(
        checkpoint=f"python:{label}",
        data=DataSpec(name=f"tensors:{data_digest(data)[:20]}"),
        grid=grid,
        directions=directions,
        splits=tuple(data),  # type: ignore[arg-type]  # SurfaceSpec checks each name
        loss=loss,
    )
    start = time.perf_counter()
    out = Path(out)
    if out.exists():
        store.check_matches(out, spec, key)
        dirs: list[Mapping[str, Tensor]] = list(store.read_directions(out))
    else:
        from landscape.directions import make_directions

        made, info = make_directions(model, directions, grid.ndim)
        dirs = list(made)
        x, y = store.grid_coordinates(grid)
        description = module_description(model)
        provenance = {
            "model": label,
            "model_args": {},
            "model_source": "python",
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "checkpoint_sha256": key,
            "weights_sha256": weights_digest(model),
            "model_description_sha256": _sha(description),
            "model_description_kind": "torch.fx"
            if "graph (torch.fx):" in description
            else "source",
            "task": task,
            "loss_definition": REGRESSION_LOSS if task == "regression" else loss,
            "dataset": spec.data.name,
            "seed": directions.seed,
            "normalization": directions.normalization,
            "ignore": directions.ignore,
            "directions_info": dict(info),
            "versions": _versions(),
            "wall_time_s": 0.0,
            **dict(extra_provenance or {}),
        }
        store.create_surface_file(out, spec, x=x, y=y, directions=dirs, provenance=provenance)
    surface = store.read_surface(out)
    missing = store.missing_points(out)
    previous_wall = float(surface.attrs.get("wall_time_s", 0.0) or 0.0)
    if len(missing) == 0:
        if surface.status != "complete":
            _finish(out, spec, None, previous_wall)
        return out
    evaluator, fallbacks = _evaluator(model, dirs, data, task, loss, options, len(missing))
    done = spec.grid.n_points - len(missing)
    with evaluator:
        info = evaluator.describe()
        unit = max(1, int(info.get("points_per_call") or 1)) * max(1, int(info.get("workers") or 1))
        wanted = min(math.ceil(len(missing) / TARGET_CHUNKS), MAX_CHUNK_POINTS)
        chunks = plan_chunks(missing, max(unit, math.ceil(wanted / unit) * unit))
        coords = [store.flat_coordinates(surface.x, surface.y, c) for c in chunks]
        try:
            for index, results in evaluator.imap(coords):
                store.write_points(out, chunks[index], results)
                done += len(chunks[index])
                if on_progress is not None:
                    elapsed = time.perf_counter() - start
                    on_progress(Progress(done, spec.grid.n_points, elapsed, None))
                if should_stop is not None and should_stop() and done < spec.grid.n_points:
                    raise CancelledError("surface computation cancelled; finished points are kept")
        except (CancelledError, KeyboardInterrupt):
            store.update_attrs(out, {"wall_time_s": previous_wall + time.perf_counter() - start})
            raise
        info = {**evaluator.describe(), "fallbacks": fallbacks}
    _finish(out, spec, info, previous_wall + time.perf_counter() - start)
    return out


def _evaluator(
    model: nn.Module, dirs: list[Mapping[str, Tensor]], data: Data, task: Task, loss: LossName,
    options: EngineOptions, n_points: int,
) -> tuple[Any, list[str]]:  # fmt: skip
    if task == "regression":
        reason = "regression head: the engine computes classification losses only"
        return RegressionEvaluator(model, dirs, data, options=options), [reason]
    from landscape.backends import make_evaluator

    options, fallbacks = plan_engine(model, data, options)
    evaluator = make_evaluator(model, dirs, data, loss=loss, options=options, n_points=n_points)
    return evaluator, fallbacks


def _finish(out: Path, spec: SurfaceSpec, info: Mapping[str, Any] | None, wall: float) -> None:
    surface = store.read_surface(out)
    attrs: dict[str, Any] = {"wall_time_s": wall}
    if info is not None:
        attrs["engine"] = dict(info)
        attrs["device"], attrs["dtype"] = str(info.get("device")), str(info.get("dtype"))
    metrics = surface_metrics(surface.x, surface.y, surface.values, spec.metric_names)
    store.mark_complete(out, metrics=metrics, attrs=attrs)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        versions["landscape"] = importlib_metadata.version("landscape")
    except importlib_metadata.PackageNotFoundError:
        from landscape import __version__

        versions["landscape"] = __version__
    return versions
