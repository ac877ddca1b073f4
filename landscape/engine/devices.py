"""Device choice shared by training and the engine, so ``auto`` means the same everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from landscape.errors import SpecError

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; asking for CUDA without one is the user's error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' was asked for but CUDA is not available; use auto or cpu")
    return torch.device(name)


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on this CPU thread and every thread it starts later.

    A net without its identity path drives many gradients below 1.2e-38 (a plain
    transformer-18 on digits: a fifth of them), and x86 cores compute on subnormals many
    times slower: its SGD steps took 0.74 s instead of 0.14 s (2 threads, 2-core Intel
    Xeon), while transformer-18's own took 0.115 s either way. Only values that small
    change. The flag is per thread (the MXCSR register) and new threads copy it from the
    thread that starts them, so entry points call this before any torch work starts
    PyTorch's thread pools. False where the CPU cannot flush.
    """
    return bool(torch.set_flush_denormal(True))


def flushing_denormals() -> bool:
    """Whether this thread flushes subnormals now (torch has no getter for the flag)."""
    return float(torch.tensor([SUBNORMAL]) * 1.0) == 0.0


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """``flush_denormals`` for a block, then this thread's flag as it was: the CLI runs its
    commands so, and a caller in the same process (a test, a notebook calling ``main``)
    gets its own floating-point state back."""
    was = flushing_denormals()
    try:
        yield flush_denormals()
    finally:
        if not was:
            torch.set_flush_denormal(False)
