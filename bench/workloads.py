"""What both surface benchmarks (CPU: ``bench/surface.py``, GPU: ``bench/surface_gpu.py``) do
to the models they time."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module) -> nn.Module:
    """Trained-looking BN statistics, so folding does real work (timing does not depend on it)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()
