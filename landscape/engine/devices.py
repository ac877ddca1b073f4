"""Device choice shared by training and the engine, so ``auto`` means the same everywhere."""

from __future__ import annotations

import torch

from landscape.errors import SpecError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; asking for CUDA without one is the user's error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' was asked for but CUDA is not available; use auto or cpu")
    return torch.device(name)
