"""``Monitor``: the loss landscape of a model measured from inside the user's training loop.

Every ``every`` steps ``monitor.step(model, step, optimizer)`` measures, on one fixed subset
of the data, what was asked: λmax of the Hessian beside 2/η from the optimizer's current
learning rate (the edge of stability, Cohen et al. 2021: docs/sharpness.md), the Hutchinson
trace, a 1-D curve and a small 2-D surface around the current weights along filter-normalized
directions (Li et al. 2018 §4). A call is a guest in the loop: the model's train/eval modes,
its weights, its gradients, the optimizer and every global RNG are as they were after it.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analysis.sharpness import SharpnessOptions
from landscape.errors import SpecError
from landscape.monitor import measure as m
from landscape.monitor.measure import MEASUREMENTS, Budget, Measurement
from landscape.monitor.run_file import MonitorRun, write_run
from landscape.sources.dict_batches import (
    LABELS,
    DictBatchModel,
    Field,
    checked_split,
    fields_of,
    pack,
)
from landscape.specs import LossName, check_choice

log = logging.getLogger(__name__)

Forward = Callable[[nn.Module, Tensor], Tensor]  # (model, inputs) → logits


@dataclass(frozen=True)
class MonitorResult:
    """What one call measured; None where it was not asked for or was cut (see ``cuts``)."""

    step: int
    loss: float  # mean loss on the subset at the current weights
    lr: float | None  # the optimizer's param_groups[0]["lr"]
    lambda_max: float | None
    lambda_max_method: str | None  # "lanczos" (converged) or "lanczos-steps" (budget cut)
    lambda_max_products: int  # Hessian-vector products λmax took (0 when not measured)
    lambda_max_residual: float | None  # ‖Hv − θv‖ of a budget-cut run's top Ritz pair
    trace: float | None
    trace_stderr: float | None
    curve1d: tuple[np.ndarray, np.ndarray] | None  # (x, loss)
    surface2d: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (x, y, loss[x, y])
    matvecs: int  # Hessian-vector products spent
    wall_s: float
    cuts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def two_over_lr(self) -> float | None:
        """2/η: the largest λmax at which gradient descent with step η is stable."""
        return 2.0 / self.lr if self.lr else None


class _Logits(nn.Module):
    """A model whose outputs are not logits, seen through ``forward(model, x)``."""

    def __init__(self, inner: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.inner = inner
        self._forward = forward

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.inner, x)


def dict_batch_pairs(data: Any, forward: Forward | None) -> tuple[tuple[Field, ...] | None, Any]:
    """A dict of equal-length tensors with per-sample ``labels`` (a ``model(**batch)``
    classifier's data) as its packing and ``(x, labels)``; other data as it is (no packing)."""
    if not isinstance(data, Mapping):
        return None, data
    if forward is not None:
        raise SpecError("give dict data or forward=, not both: dict data calls model(**batch)")
    split = checked_split("data", data, LABELS)
    labels = split[LABELS]
    if labels.dim() != 1:
        raise SpecError(
            f"the monitor takes one label per sample, got labels of shape {tuple(labels.shape)}: "
            "its losses (the Hessian's among them) are per-sample losses of (B, C) logits, so "
            "token-level labels are for compute_module_surface"
        )
    fields = fields_of(split, [k for k in split if k != LABELS])
    return fields, (pack(split, fields), labels)


def fixed_subset(data: Any, max_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(x, y)`` tensors from ``data`` (a pair of tensors or a map-style dataset of pairs),
    at most ``max_samples`` of them, drawn once from ``seed`` (its own generator)."""
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        x, y = data
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        pairs = [data[i] for i in range(len(data))]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
    else:
        raise SpecError(f"data must be (inputs, targets) tensors or a dataset, got {type(data)!r}")
    if len(x) == 0 or len(x) != len(y):
        raise SpecError(f"data needs as many targets as inputs (>= 1), got {len(x)}, {len(y)}")
    if max_samples < 1:
        raise SpecError(f"max_samples must be >= 1, got {max_samples}")
    if len(x) > max_samples:
        picks = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        picks = picks[:max_samples].sort().values
        x, y = x[picks.to(x.device)], y[picks.to(y.device)]
    return x.detach(), y.detach()


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """The model's modes (per module), weights and buffers, gradients and the torch, CUDA,
    NumPy and Python RNGs, restored on the way out however the block ends."""
    modes = [(module, module.training) for module in model.modules()]
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = [(p, p.grad) for p in model.parameters()]
    rng_cpu, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda_in_use = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    rng_cuda = torch.cuda.get_rng_state_all() if cuda_in_use else None
    try:
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                if not torch.equal(value, saved[key]):
                    value.copy_(saved[key])
        for p, grad in grads:
            p.grad = grad
        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None:
            torch.cuda.set_rng_state_all(rng_cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)


def current_lr(optimizer: Any) -> float | None:
    """``param_groups[0]["lr"]`` of a torch optimizer (read, never changed); None without."""
    if optimizer is None:
        return None
    groups = getattr(optimizer, "param_groups", None)
    if not groups or "lr" not in groups[0]:
        raise SpecError(f"optimizer {type(optimizer).__name__} has no param_groups[0]['lr']")
    return float(groups[0]["lr"])


class Monitor:
    """Loss-landscape measurements every ``every`` steps of a training loop (docs/monitor.md).

    ``budget_s`` bounds one call: what would exceed it is cut (fewer Lanczos steps or
    Hutchinson probes, a curve or surface skipped) and the cut is recorded in the result, the
    run file and the log. ``forward(model, x)`` gives logits for models whose output is not
    (e.g. ``lambda m, x: m(input_ids=x).logits``). ``data`` may also be a dict of
    equal-length tensors with one ``labels`` entry per sample, for a classifier called as
    ``model(**batch)`` (``landscape.sources.dict_batches``; docs/models.md).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        data: Any = None,
        *,
        loss: LossName = "cross_entropy",
        every: int = 100,
        measure: Sequence[Measurement] = ("lambda_max", "trace"),
        budget_s: float | None = None,
        run_file: str | Path | None = None,
        tensorboard: Any = None,
        seed: int = 0,
        max_samples: int = 512,
        trace_samples: int = 10,
        curve_points: int = 11,
        surface_points: int = 7,
        span: float = 1.0,
        sharpness: SharpnessOptions | None = None,
        forward: Forward | None = None,
    ) -> None:
        from landscape.monitor.tensorboard import open_writer

        check_choice("loss", loss, LossName)
        for what in measure:
            check_choice("measurement", what, Measurement)
        if data is None:
            raise SpecError("Monitor needs data: (inputs, targets) tensors or a dataset")
        if every < 1 or trace_samples < 1 or curve_points < 2 or surface_points < 2:
            raise SpecError(
                "every, trace_samples must be >= 1 and curve_points, surface_points >= 2, got "
                f"{every}, {trace_samples}, {curve_points}, {surface_points}"
            )
        if budget_s is not None and not budget_s > 0:
            raise SpecError(f"budget_s must be > 0 seconds or None, got {budget_s!r}")
        if not span > 0:
            raise SpecError(f"span must be > 0, got {span!r}")
        self.model, self.loss, self.every = model, loss, every
        self.measure: tuple[Measurement, ...] = tuple(w for w in MEASUREMENTS if w in measure)
        self.budget_s, self.seed, self.forward = budget_s, seed, forward
        self.fields, data = dict_batch_pairs(data, forward)
        self.data = fixed_subset(data, max_samples, seed)
        self.trace_samples = trace_samples
        self.curve_axis = np.linspace(-span, span, curve_points)
        self.surface_axis = np.linspace(-span, span, surface_points)
        self.sharpness = sharpness or SharpnessOptions(seed=seed)
        self.run_file = Path(run_file) if run_file is not None else None
        self.writer, self._owns_writer = open_writer(tensorboard)
        self._warm: np.ndarray | None = None  # last top eigenvector: the next Lanczos start
        self._on: dict[str, tuple[Tensor, Tensor]] = {}  # the subset, per device
        self.run = MonitorRun(
            attrs={
                "loss": loss,
                "n_samples": len(self.data[0]),
                "every": every,
                "measure": list(self.measure),
                "budget_s": budget_s,
                "seed": seed,
                "span": span,
                "model": type(model).__name__ if model is not None else None,
            }
        )

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the TensorBoard writer the monitor opened from a folder (not a given one)."""
        if self.writer is not None and self._owns_writer:
            self.writer.close()
            self.writer = None

    def step(
        self, model: nn.Module | None, step: int, optimizer: Any = None
    ) -> MonitorResult | None:
        """Measure at ``step`` when it is a multiple of ``every`` (None otherwise), log it and
        write the run file. ``model``: None takes the one given to the monitor."""
        if step % self.every != 0:
            return None
        model = model if model is not None else self.model
        if model is None:
            raise SpecError("Monitor.step needs a model (none was given to the monitor)")
        lr = current_lr(optimizer)
        self.run.attrs["model"] = self.run.attrs.get("model") or type(model).__name__
        with preserved(model):
            model.eval()  # BN on its running statistics: the loss is a function of θ
            result = self._measure(model, step, lr)
        self._record(result)
        return result

    def _subset_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = str(device)
        if key not in self._on:
            self._on = {key: (self.data[0].to(device), self.data[1].to(device))}
        return self._on[key]

    def _measure(self, model: nn.Module, step: int, lr: float | None) -> MonitorResult:
        from landscape.analysis.hessian import HessianOperator

        budget = Budget(self.budget_s)
        first = next(iter(model.parameters()), None)
        if first is None:
            raise SpecError("the model has no parameters to measure")
        device = first.device
        seen = model if self.forward is None else _Logits(model, self.forward).eval()
        if self.fields is not None:  # model(**batch) on the packed dict (sources.dict_batches)
            seen = DictBatchModel(model, self.fields, token_level=False, shift_labels=False)
        data = self._subset_on(device)
        operator = HessianOperator(
            seen,
            data,
            loss=self.loss,
            device=str(device),
            dtype=first.dtype,
            batch_size=self.sharpness.batch_size,
        )
        loss, costs = m.probe_costs(operator)
        found: dict[str, Any] = {}
        if "lambda_max" in self.measure:
            try:
                found["lambda_max"], vector = m.lambda_max(
                    operator, self.sharpness, self._warm, costs, budget
                )
                self._warm = vector if vector is not None else self._warm
            except SpecError as exc:  # ARPACK unconverged within its cap: recorded, not raised
                budget.cut("lambda_max", self.sharpness.product_cap, 0, "products", str(exc))
                found["lambda_max"] = None
        if "trace" in self.measure:
            found["trace"] = m.trace(operator, self.trace_samples, self.seed, costs, budget)
        for what, axes in (("curve1d", [self.curve_axis]), ("surface2d", [self.surface_axis] * 2)):
            if what in self.measure:
                found[what] = m.slice_losses(
                    seen,
                    data,
                    self.loss,
                    axes,
                    seed=self.seed,
                    device=device,
                    what=what,
                    costs=costs,
                    budget=budget,
                )
        for cut in budget.cuts:
            log.warning(
                "monitor step %d: %s cut to %d of %d %s: %s",
                step,
                cut["what"],
                cut["done"],
                cut["planned"],
                cut["unit"],
                cut["reason"],
            )
        top, tr = found.get("lambda_max"), found.get("trace")
        curve, surface = found.get("curve1d"), found.get("surface2d")
        return MonitorResult(
            step=step,
            loss=loss,
            lr=lr,
            lambda_max=top["lambda_max"] if top else None,
            lambda_max_method=top["method"] if top else None,
            lambda_max_products=top["products"] if top else 0,
            lambda_max_residual=top["residual"] if top else None,
            trace=tr["trace"] if tr else None,
            trace_stderr=tr["stderr"] if tr else None,
            curve1d=None if curve is None else (self.curve_axis, curve),
            surface2d=None if surface is None else (self.surface_axis, self.surface_axis, surface),
            matvecs=operator.matvecs,
            wall_s=budget.elapsed(),
            cuts=budget.cuts,
        )

    def _record(self, result: MonitorResult) -> None:
        """Add ``result`` to the run (and its file) and to TensorBoard."""
        run, step = self.run, result.step
        if result.lambda_max is not None:
            run.sharpness.append(
                {
                    "step": step,
                    "path": f"step_{step}",
                    "lambda_max": result.lambda_max,
                    "loss": result.loss,
                    "lr": result.lr,
                    "matvecs": result.lambda_max_products,
                    "precision": "fp32",
                    "method": result.lambda_max_method,
                    "residual": result.lambda_max_residual,
                }
            )
        if result.trace is not None:
            samples = next(
                (c["done"] for c in result.cuts if c["what"] == "trace"), self.trace_samples
            )
            run.traces.append(
                {
                    "step": step,
                    "trace": result.trace,
                    "stderr": result.trace_stderr,
                    "samples": samples,
                }
            )
        if result.curve1d is not None:
            run.curve1d.axes = [result.curve1d[0]]
            run.curve1d.steps.append(step)
            run.curve1d.losses.append(result.curve1d[1])
        if result.surface2d is not None:
            run.surface2d.axes = [result.surface2d[0], result.surface2d[1]]
            run.surface2d.steps.append(step)
            run.surface2d.losses.append(result.surface2d[2])
        run.calls.append(
            {"step": step, "wall_s": result.wall_s, "budget_s": self.budget_s, "cuts": result.cuts}
        )
        if self.run_file is not None:
            write_run(self.run_file, run)
        if self.writer is not None:
            from landscape.monitor.tensorboard import log_call

            log_call(
                self.writer,
                step,
                {
                    "lambda_max": result.lambda_max,
                    "two_over_lr": result.two_over_lr,
                    "trace": result.trace,
                    "loss": result.loss,
                    "curve1d": result.curve1d,
                    "surface2d": result.surface2d,
                },
            )
