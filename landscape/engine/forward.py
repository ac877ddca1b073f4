"""The per-batch functions of the engine — loss sum and correct count of one batch at one grid
point, or at K points through ``torch.vmap`` — and their compiled forms, one per function for
the whole process.

Why module-level functions taking the module and weights as inputs: a function compiled per
evaluator (a bound method, a closure) is the same code object to dynamo every time, so each
new evaluator re-traced it, and once dynamo's recompile limit (8 per code object) was reached
every later evaluator silently ran eager while its provenance still said "compile". Compiled
here once, evaluators of the same module class and shapes share the graph; a BN-folded module
is a ``torch.fx.GraphModule``, a class of its own, so each such evaluator still adds its own
graph (one per split shape). ``compile_limits`` is the recompile budget those entries get.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo  # at import, not from inside an evaluator: see compile_limits
from torch import Tensor, nn
from torch.func import functional_call

from landscape.errors import SpecError
from landscape.losses import Loss, get_loss, losses_and_outputs

BatchFn = Callable[..., tuple[Tensor, Tensor]]

# Graphs kept per compiled function: dynamo keeps every entry for the life of the process, and
# a BN-folded evaluator adds one per split shape, so the API's worker meets dynamo's default of
# 8 after four two-split surfaces. 64 keeps the first ~32 compiled; past it a hit raises
# (caught: that evaluator records compiled=False and runs eager) instead of going eager
# unannounced.
_RECOMPILE_LIMIT = 64


def per_sample_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Per-sample loss, shape ``(B,)``, of a loss that needs only the outputs (``mse`` is Li et
    al. 2018's: softmax against one-hot; ``landscape.losses`` defines each)."""
    of_logits = get_loss(loss).of_logits
    if of_logits is None:
        raise SpecError(f"loss {loss!r} sees the model's weights, not only its outputs")
    return of_logits(logits, y)


class _LossCall(nn.Module):
    """``loss(model, x, y)`` as a forward, so ``functional_call`` puts a grid point's weights
    into the very model a loss that sees the model is handed."""

    def __init__(self, model: nn.Module, loss: Loss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return losses_and_outputs(self.loss, self.model, x, y)


def losses_at(
    module: nn.Module, loss: Loss, params: dict[str, Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample losses ``(B,)`` and logits at ``params``."""
    if loss.of_logits is not None:
        logits = logits_at(module, params, x)
        return loss.of_logits(logits.float(), y), logits
    out: tuple[Tensor, Tensor] = functional_call(
        _LossCall(module, loss), {f"model.{n}": t for n, t in params.items()}, (x, y)
    )
    return out


def logits_at(module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """The forward pass with ``params`` in place of the module's own: the one place the engine
    runs the model."""
    out: Tensor = functional_call(module, params, (x,))
    return out


def batch_sums(
    module: nn.Module, loss: Loss, params: dict[str, Tensor], x: Tensor, y: Tensor,
    mask: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Loss sum (float64) and correct count of one batch at one grid point; ``mask`` marks the
    real samples (padding counts for nothing)."""
    per, logits = losses_at(module, loss, params, x, y)
    loss_sum = torch.where(mask, per, torch.zeros_like(per)).double().sum()
    correct = ((logits.argmax(dim=1) == y) & mask).sum()
    return loss_sum, correct


def batch_sums_k(
    module: nn.Module, loss: Loss, static: dict[str, Tensor], moving: dict[str, Tensor],
    x: Tensor, y: Tensor, mask: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The same for K grid points at once: ``moving`` parameters carry a leading K dimension,
    ``static`` ones (moved by no direction) are shared; both results have shape ``(K,)``. A
    loss that sees the model runs inside the vmap, on each point's weights."""
    if loss.of_logits is None:
        per, logits = torch.vmap(lambda p: losses_at(module, loss, {**static, **p}, x, y))(moving)
        k, b = per.shape
    else:

        def one(p: dict[str, Tensor]) -> Tensor:
            return logits_at(module, {**static, **p}, x)

        logits = torch.vmap(one)(moving)  # (K, B, classes)
        k, b, c = logits.shape
        per = loss.of_logits(logits.reshape(k * b, c).float(), y.repeat(k))
    per = torch.where(mask.repeat(k), per.reshape(-1), torch.zeros_like(per.reshape(-1))).view(k, b)
    correct = ((logits.argmax(dim=2) == y) & mask).sum(dim=1)
    return per.double().sum(dim=1), correct


@functools.cache
def compiled(fn: BatchFn) -> BatchFn:
    """The process's one compiled form of ``batch_sums`` or ``batch_sums_k`` (shapes static:
    every batch of a split has one shape, so dynamic shapes would only add guards)."""
    out: BatchFn = torch.compile(fn, dynamic=False)
    return out


def compile_limits() -> contextlib.AbstractContextManager[Any]:
    """Dynamo's settings while the engine calls its compiled functions: the recompile budget
    above, and a hard error instead of the silent eager fallback when it is spent (which needs
    ``suppress_errors`` off). Where torch's ``config.patch`` is not thread-local (older
    versions) they apply to whatever else compiles in the process during the block.

    ``torch._dynamo`` is imported with this module: its import makes reference cycles through
    the frames on the stack, so importing it from inside an evaluator's call kept that
    evaluator (its GPU data included) alive until the cyclic collector ran."""
    config = torch._dynamo.config
    wanted = {
        "recompile_limit": _RECOMPILE_LIMIT,
        "fail_on_recompile_limit_hit": True,
        "suppress_errors": False,
    }
    # pyproject allows torch >= 2.3, older than some of these names: on such a torch the
    # budget stays dynamo's own, rather than every call failing on an unknown setting
    patch: contextlib.AbstractContextManager[Any] = config.patch(
        {name: value for name, value in wanted.items() if hasattr(config, name)}
    )
    return patch
