"""Gradient flow: how large the training loss's gradient is at each layer, input to output.

He et al. 2016 explain why deep plain nets degrade and residual ones do not by the gradient's
path back to early layers: an identity shortcut is a "highway" that carries it undiminished.
This module turns that into data: for every weight of a conv or linear layer, in the order
the forward pass uses them, ``‖∂L/∂W‖`` and ``‖∂L/∂W‖ / ‖W‖`` (the relative step SGD takes).

Definitions (the ``gradient_flow/`` group of a surface file, docs/format.md):

- *Layer*: the ``weight`` of each ``nn.Conv*`` / ``nn.Linear`` module, in the order their
  forward calls first run on one input (found with forward hooks, so a module registered out
  of order still lands at its true depth). *Depth* is that position, 1 = nearest the input.
  Biases, BN affine parameters and projection-free shortcuts hold no such weight and are
  not layers; a 1×1 projection conv is one (at the depth where it runs).
- *Loss*: mean cross-entropy over ``data`` (the whole split), the gradient of which is
  accumulated over batches of ``batch_size`` weighted by their size. In ``train`` mode BN
  uses batch statistics, as during training (the gradient then depends on the batching, as
  SGD's does); the caller's model is never modified (a copy is used, so running statistics
  stay as they were). In ``eval`` mode BN uses running statistics: the plotted loss.
- *Precision*: the forward and backward run in the engine's policy (``compute_in``: ``auto``
  is tf32 on CUDA, fp32 elsewhere; ``bf16`` under autocast), the resolved one recorded in
  ``settings``, so a flow and the surface it is stored with are computed alike.
- *Through time* (recurrent nets, ``landscape.models.recurrent``): the same loss's gradient
  with respect to each step's hidden state, ``‖∂L/∂h_t‖`` for ``t = 1 … T`` (Frobenius over
  every sample and unit), kept by a forward hook that calls ``retain_grad`` on each output of
  the net's first ``RecurrentCell``. ``∂L/∂h_t`` is the total derivative: every path from
  ``h_t`` to the loss, the LSTM's cell state included. Bengio et al. 1994 and Hochreiter &
  Schmidhuber 1997 explain the RNN's failure on long sequences by this norm vanishing
  toward ``t = 1``; the gates are meant to keep it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape.engine.point_evaluator import per_sample_loss
from landscape.engine.precision import compute_in, resolve
from landscape.errors import SpecError
from landscape.models.recurrent import RecurrentCell
from landscape.specs import LossName, Precision, check_choice

GROUP_NAME = "gradient_flow"
ENCODING_TYPE = "gradient-flow"
ENCODING_VERSION = "1"
DEFAULT_BATCH_SIZE = 128  # the training batch of TrainSpec
Mode = Literal["train", "eval"]
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class GradientFlow:
    """Per-layer gradient and weight norms, in forward order (index ``k`` = depth ``k + 1``)."""

    names: tuple[str, ...]  # parameter names (``named_parameters()``), e.g. "layer1.0.conv1.weight"
    grad_norm: np.ndarray  # (L,) ‖∂L/∂W‖₂ (Frobenius) per layer
    weight_norm: np.ndarray  # (L,) ‖W‖₂ per layer
    loss: float  # the mean loss the gradient is of
    n_samples: int
    settings: dict[str, Any] = field(default_factory=dict)
    # (T,) ‖∂L/∂h_t‖ per time step, index ``t`` = step ``t + 1``; None for non-recurrent nets
    time_grad_norm: np.ndarray | None = None

    @property
    def depth(self) -> np.ndarray:
        """1-based depth of each layer, 1 nearest the input."""
        return np.arange(1, len(self.names) + 1)

    @property
    def ratio(self) -> np.ndarray:
        """``‖∂L/∂W‖ / ‖W‖`` per layer (NaN for an all-zero weight)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.weight_norm > 0, self.grad_norm / self.weight_norm, np.nan)

    def input_to_output_ratio(self, fraction: float = 0.25) -> float:
        """Mean gradient norm over the first ``fraction`` of layers divided by that over the
        last ``fraction``: well below 1 means the gradient decays toward the input."""
        return _quarter_ratio(self.grad_norm, fraction)

    def through_time_ratio(self, fraction: float = 0.25) -> float | None:
        """The same over time steps: mean ``‖∂L/∂h_t‖`` of the first ``fraction`` of steps
        over that of the last; well below 1, the gradient fades before it reaches the first
        rows. None for a net without a recurrent cell."""
        if self.time_grad_norm is None:
            return None
        return _quarter_ratio(self.time_grad_norm, fraction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (lists, plain floats)."""
        return {
            "names": list(self.names),
            "depth": self.depth.tolist(),
            "grad_norm": self.grad_norm.tolist(),
            "weight_norm": self.weight_norm.tolist(),
            "ratio": [None if not np.isfinite(r) else float(r) for r in self.ratio],
            "loss": self.loss,
            "n_samples": self.n_samples,
            "input_to_output_ratio": self.input_to_output_ratio(),
            "time_grad_norm": None if self.time_grad_norm is None else self.time_grad_norm.tolist(),
            "through_time_ratio": self.through_time_ratio(),
            "settings": dict(self.settings),
        }


def _quarter_ratio(values: np.ndarray, fraction: float) -> float:
    k = max(1, round(len(values) * fraction))
    last = float(np.mean(values[-k:]))
    return float(np.mean(values[:k]) / last) if last > 0 else float("nan")


def forward_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the conv/linear ``weight`` parameters in the order one forward pass uses them."""
    owner = {id(m): name for name, m in model.named_modules() if isinstance(m, _LAYER_TYPES)}
    order: list[str] = []

    def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
        name = owner[id(module)]
        if name not in order:
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in owner]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [f"{name}.weight" if name else "weight" for name in order]


def gradient_flow(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    mode: Mode = "train",
    loss: LossName = "cross_entropy",
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: Precision = "auto",
) -> GradientFlow:
    """Per-layer ``‖∂L/∂W‖`` of the mean ``loss`` over ``data`` at the model's weights (see the
    module docstring for what a layer, the loss and the precision are). Runs where the model's
    weights are."""
    check_choice("gradient flow mode", mode, Mode)
    check_choice("precision", precision, Precision)
    check_choice("loss", loss, LossName)
    if batch_size < 1:
        raise SpecError(f"batch_size must be >= 1, got {batch_size}")
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise SpecError(f"gradient flow needs a non-empty data split, got {len(x)} inputs")
    work = copy.deepcopy(model)
    if not any(isinstance(m, _LAYER_TYPES) for m in work.modules()):
        raise SpecError("the model has no conv or linear layer to measure")
    device = next(work.parameters()).device
    resolved = resolve(precision, device)  # tf32/bf16 off CUDA are refused
    x, y = x.to(device), y.to(device)
    names = forward_layers(work, x)
    params = dict(work.named_parameters())
    work.train(mode == "train")
    work.zero_grad(set_to_none=True)
    loss_sum = 0.0
    steps = _StepStates(work)
    try:
        with compute_in(resolved, device):
            for start in range(0, len(y), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                if mode == "train" and len(yb) < 2 and start:  # BN cannot use a batch of one
                    continue
                logits = work(xb)
                if resolved == "bf16":  # the loss of float32 logits, as the engine takes it
                    logits = logits.float()
                batch_loss = per_sample_loss(logits, yb, loss).sum()
                (batch_loss / len(y)).backward()  # type: ignore[no-untyped-call]
                loss_sum += float(batch_loss.detach())
                steps.collect()
    finally:
        steps.close()
    grads, weights = [], []
    for name in names:
        p = params[name]
        grads.append(0.0 if p.grad is None else float(p.grad.double().norm()))
        weights.append(float(p.detach().double().norm()))
    return GradientFlow(
        names=tuple(names),
        grad_norm=np.asarray(grads),
        weight_norm=np.asarray(weights),
        loss=loss_sum / len(y),
        n_samples=len(y),
        settings={"mode": mode, "loss": loss, "batch_size": batch_size, "precision": resolved},
        time_grad_norm=steps.norms(),
    )


class _StepStates:
    """``‖∂L/∂h_t‖`` of the model's first recurrent cell, summed in square over batches (the
    full split's ``h_t`` is the batches' stacked, so its norm is the root of their sum)."""

    def __init__(self, model: nn.Module) -> None:
        cells = [m for m in model.modules() if isinstance(m, RecurrentCell)]
        self.states: list[Tensor] = []
        self.squares: list[float] = []
        self.handle = cells[0].register_forward_hook(self._keep) if cells else None

    def _keep(self, _module: nn.Module, _inputs: Any, output: tuple[Tensor, ...]) -> None:
        if output[0].requires_grad:
            output[0].retain_grad()
            self.states.append(output[0])

    def collect(self) -> None:
        """After a batch's backward: add its per-step squared norms, forget its states."""
        if self.handle is None:
            return
        if not self.squares:
            self.squares = [0.0] * len(self.states)
        for t, h in enumerate(self.states):
            self.squares[t] += 0.0 if h.grad is None else float(h.grad.double().pow(2).sum())
        self.states = []

    def norms(self) -> np.ndarray | None:
        return None if self.handle is None else np.sqrt(np.asarray(self.squares))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


# ------------------------------------------------------------------------------ HDF5 group


def group_contents(
    flows: Mapping[str, GradientFlow], attrs: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and attrs of the ``gradient_flow/`` group for ``store.write_group``: one
    sub-group per labelled flow (e.g. ``init``, ``trained``)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for label, flow in flows.items():
        if not label or "/" in label:
            raise SpecError(f"{label!r} is not a label for a gradient flow")
        arrays[f"{label}/grad_norm"] = flow.grad_norm
        arrays[f"{label}/weight_norm"] = flow.weight_norm
        if flow.time_grad_norm is not None:  # recurrent nets; older readers skip the entry
            arrays[f"{label}/time_grad_norm"] = flow.time_grad_norm
        meta[label] = {
            "names": list(flow.names),
            "loss": flow.loss,
            "n_samples": flow.n_samples,
            "settings": dict(flow.settings),
        }
    out = {
        "encoding-type": ENCODING_TYPE,
        "encoding-version": ENCODING_VERSION,
        "flows": json.dumps(meta),
        **(attrs or {}),
    }
    return arrays, out


def from_group(
    arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> dict[str, GradientFlow]:
    """The flows of a ``gradient_flow/`` group read by ``store.read_group``."""
    if attrs.get("encoding-type") != ENCODING_TYPE:
        raise SpecError(f"not a gradient-flow group (encoding-type {attrs.get('encoding-type')!r})")
    if str(attrs.get("encoding-version")) != ENCODING_VERSION:
        raise SpecError(
            f"gradient-flow group version {attrs.get('encoding-version')!r}; this version "
            f"reads {ENCODING_VERSION!r}"
        )
    meta = attrs["flows"]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    flows = {}
    for label, info in meta.items():
        time = arrays.get(f"{label}/time_grad_norm")
        flows[label] = GradientFlow(
            names=tuple(info["names"]),
            grad_norm=np.asarray(arrays[f"{label}/grad_norm"], dtype=np.float64),
            weight_norm=np.asarray(arrays[f"{label}/weight_norm"], dtype=np.float64),
            loss=float(info["loss"]),
            n_samples=int(info["n_samples"]),
            settings=dict(info["settings"]),
            time_grad_norm=None if time is None else np.asarray(time, dtype=np.float64),
        )
    return flows
