"""One precision policy for every CUDA path: the surface engine, the regression path, Hessian
products and training.

PyTorch's TF32 switches are process-global: a notebook (or the API's worker, one process for
every job) that computed a tf32 surface and then trained or took Hessian products would do
those in TF32 too, and a strict-fp32 request after a tf32 one would silently get TF32. So each
path runs its work inside ``compute_in(precision, device)``, which sets the switches for the
resolved precision and restores them on exit. The switches stay process-global while a block
runs: two threads computing in different precisions at the same moment still see each other's.

Measured error of each precision against strict fp32: ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from landscape.errors import SpecError
from landscape.specs import Precision, ResolvedPrecision

# What ``describe()`` and the surface file call each precision's number type.
DTYPE_LABEL: dict[ResolvedPrecision, str] = {"fp32": "float32", "tf32": "tf32", "bf16": "bf16"}


def resolve(precision: Precision, device: torch.device | str) -> ResolvedPrecision:
    """``auto`` is ``tf32`` on CUDA (the tensor cores; PyTorch's own default for cuDNN
    convolutions) and ``fp32`` elsewhere; ``tf32``/``bf16`` off CUDA are refused: TF32 does not
    exist there, and bf16 ran 7× slower than fp32 on a CPU without native bf16 — a silent
    fallback would mislabel the result (``docs/performance.md``)."""
    kind = torch.device(device).type
    if precision == "auto":
        return "tf32" if kind == "cuda" else "fp32"
    if kind != "cuda" and precision != "fp32":
        raise SpecError(
            f"precision {precision!r} needs a CUDA device (this run is on {kind}); "
            "use precision fp32 or auto"
        )
    return precision


@contextlib.contextmanager
def precision_flags(precision: ResolvedPrecision, *, autotune: bool = False) -> Iterator[None]:
    """Within the block: TF32 tensor cores for cuDNN convolutions and cuBLAS matmuls unless
    ``precision`` is strict ``fp32`` (``bf16`` runs under autocast, and what autocast leaves in
    fp32 may use TF32); cuDNN autotuning with ``autotune`` (hundreds of identical-shape calls
    repay its trials). Every switch is as it was on exit, however the block ends."""
    tf32 = precision != "fp32"
    benchmark = torch.backends.cudnn.benchmark
    legacy = _legacy_switches()
    conv = _cudnn_conv()
    if legacy is None:  # this process uses torch's newer fp32_precision switches
        saved = (torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision)
        mode = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        conv.fp32_precision = mode
    else:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
    if autotune:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        if legacy is None:
            torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision = saved
        else:
            torch.set_float32_matmul_precision(legacy[0])
            torch.backends.cudnn.allow_tf32 = legacy[1]


def _legacy_switches() -> tuple[str, bool] | None:
    """The matmul precision and cuDNN TF32 switch, or ``None`` when the process has set TF32
    through ``torch.backends.*.fp32_precision`` (torch ≥ 2.9): reading the older switches then
    raises, and writing them would mix the two APIs, which torch refuses on the next read. The
    older switches are used otherwise because inductor still reads ``cudnn.allow_tf32``."""
    try:
        return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None


def _cudnn_conv() -> Any:
    """``torch.backends.cudnn.conv`` (torch ≥ 2.9), which torch adds at import time and its type
    stubs do not declare; ``None`` before 2.9, where ``_legacy_switches`` never fails."""
    return getattr(torch.backends.cudnn, "conv", None)


@contextlib.contextmanager
def compute_in(
    precision: ResolvedPrecision, device: torch.device, *, autotune: bool = False
) -> Iterator[None]:
    """``precision_flags`` plus, for ``bf16``, bf16 autocast on ``device`` (the engine takes
    logits from a float32 head: ``forward.head_in_fp32``); on ``device`` as the current CUDA
    device. ``resolve`` admits ``bf16`` on CUDA only; tests run its autocast on the CPU."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
        stack.enter_context(precision_flags(precision, autotune=autotune))
        if precision == "bf16":
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        yield
