"""BatchNorm running statistics re-estimated for the weights a model holds now.

A net whose weights were not trained as they are (a point between two checkpoints, a point of
a plane through three) carries running statistics that belong to other weights: evaluated in
eval mode it is judged with the wrong normalization, and its loss can look far worse than the
function the weights define. Garipov et al. 2018 (§5, their ``utils.bn_update``) recompute the
statistics on training data before every evaluation; ``torch.optim.swa_utils.update_bn`` is
the same loop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

BN_BATCH_SIZE = 256  # samples per forward pass of the re-estimation


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def bn_subset_indices(n_train: int, size: int, seed: int) -> Tensor:
    """A fixed, seeded subset of the training split (sorted): the same samples at every point,
    so the re-estimated statistics differ between points only because the weights do."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(n_train, generator=generator)[: min(size, n_train)]
    return keep.sort().values


def recompute_bn(model: nn.Module, inputs: Tensor, batch_size: int = BN_BATCH_SIZE) -> int:
    """Replace every BN layer's running mean and variance by those of ``inputs`` under the
    model's current weights; return how many layers were re-estimated. The model is left in
    eval mode.

    The buffers are reset and the subset forwarded with ``momentum=None`` (PyTorch's cumulative
    average: each batch weighs the same), so the result does not depend on the old statistics.
    Only the BN layers run in train mode: dropout or other train-only behaviour elsewhere would
    change the activations the statistics are taken of (the zoo's nets have none, so there
    this equals ``update_bn``'s whole-model train mode).
    """
    layers = batchnorm_layers(model)
    if not layers:
        model.eval()
        return 0
    momenta = [layer.momentum for layer in layers]
    model.eval()
    device = next(iter(model.parameters())).device
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        with torch.no_grad():
            for batch in torch.split(inputs, batch_size):
                model(batch.to(device))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return len(layers)
