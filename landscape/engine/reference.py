"""The naive per-point loop of the original tool: the baseline of exactness tests and of the
benchmark."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.losses import Loss, LossFn, losses_and_outputs, resolve_loss

Data = Mapping[str, tuple[Tensor, Tensor]]
Results = dict[str, np.ndarray]


def reference_evaluate(
    model: nn.Module,
    directions: list[Mapping[str, Tensor]],
    coords: np.ndarray,
    data: Data,
    *,
    loss: str | Loss | LossFn = "cross_entropy",
    batch_size: int = 128,
) -> Results:
    """The naive per-point loop of the original tool: for each point copy ``θ + Σ c_k d_k``
    into the model's parameters, then iterate a DataLoader in eval mode; a loss that sees the
    model is handed the model itself, holding the point's weights. Restores θ after."""
    resolved = resolve_loss(loss)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(directions))
    model.eval()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = {f"{s}_{m}": np.empty(len(coords)) for s in data for m in ("loss", "acc")}
    try:
        with torch.no_grad():
            for i, point in enumerate(coords):
                for name, p in model.named_parameters():
                    value = theta[name].clone()
                    for c, d in zip(point, directions, strict=True):
                        value.add_(d[name].to(value.device), alpha=float(c))
                    p.copy_(value)
                for split, (x, y) in data.items():
                    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
                    total, correct = 0.0, 0
                    for xb, yb in loader:
                        per, logits = losses_and_outputs(resolved, model, xb, yb)
                        total += float(per.double().sum())
                        correct += int((logits.argmax(dim=1) == yb).sum())
                    out[f"{split}_loss"][i] = total / len(x)
                    out[f"{split}_acc"][i] = correct / len(x)
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(theta[name])
    return out
