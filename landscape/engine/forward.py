"""The per-batch functions of the engine — loss sum and correct count of one batch at one grid
point, or at K points through ``torch.vmap`` — and their compiled forms.

Why module-level functions taking the module and weights as inputs: a function compiled per
evaluator (a bound method, a closure) is the same code object to dynamo every time, so each
new evaluator re-traced it, and once dynamo's recompile limit (8 per code object) was reached
every later evaluator silently ran eager while its provenance still said "compile". Compiled
forms are kept per architecture (``landscape.engine.shared_graphs``): evaluators of the same
network, shapes and precision share the graphs whatever their weights, a BN-folded
``torch.fx.GraphModule`` included. ``compile_limits`` is the recompile budget each gets.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo  # at import, not from inside an evaluator: see compile_limits
from torch import Tensor, nn
from torch.func import functional_call

from landscape.engine.shared_graphs import compiled_for
from landscape.errors import SpecError
from landscape.losses import Loss, get_loss, losses_and_outputs

BatchFn = Callable[..., tuple[Tensor, Tensor]]

# Graphs kept per compiled function of one architecture: one per split shape, K and halved
# batch after out-of-memory errors. Past it a hit raises (caught: that evaluator records
# compiled=False and runs eager) instead of going eager unannounced.
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


def compiled(fn: BatchFn, key: str | None = None) -> BatchFn:
    """The compiled form of ``batch_sums`` or ``batch_sums_k`` for the architecture whose
    ``shared_graphs.graph_key`` is ``key`` (``None``: one form for the whole process). Shapes
    are static: every batch of a split has one shape, so dynamic shapes would only add
    guards."""
    if key is None:
        return _compiled_once(fn)
    out: BatchFn = compiled_for(key, fn)
    return out


@functools.cache
def _compiled_once(fn: BatchFn) -> BatchFn:
    out: BatchFn = torch.compile(fn, dynamic=False)
    return out


def head_in_fp32(module: nn.Module, example: Tensor) -> str | None:
    """Make the submodule that produces ``module``'s output (the classifier's last layer)
    compute in float32 with autocast off, in place; its name, or ``None`` when no leaf
    module's output is the model's (then nothing changes).

    Why: under bf16 autocast the last linear layer writes bf16 logits, so logits that differ
    by less than bf16's resolution (1 part in 256) tie or swap, and argmax — the accuracy —
    reads rounding, as does the loss taken from them; upcasting the logits afterwards keeps
    the rounding. The head's input keeps the body's bf16 rounding: that is the precision
    asked for. Found by running one sample: the first leaf module whose output shares the
    model's output's storage — its producer; a view (``.view``, ``.squeeze``) or an in-place
    op after it shares it too (every output is held, so no storage is reused meanwhile)."""
    calls: list[tuple[nn.Module, Tensor]] = []

    def record(m: nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            calls.append((m, out))

    leaves = [m for m in module.modules() if not list(m.children()) and m is not module]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.inference_mode():
            final = module(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not isinstance(final, Tensor):
        return None
    target = final.untyped_storage().data_ptr()
    head = next((m for m, out in calls if out.untyped_storage().data_ptr() == target), None)
    if head is None:
        return None
    head.__class__ = _float32_class(type(head))
    name: str = next(n for n, m in module.named_modules() if m is head)
    return name


_float32_classes: dict[type[nn.Module], type[nn.Module]] = {}
_float32_lock = threading.Lock()


def _float32_class(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` computing in float32 with autocast off (one class per ``cls``: dynamo guards on
    the class, so every evaluator's head must share it)."""
    if getattr(cls, "float32_head", False):
        return cls

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        device = "cpu"
        for a in args:
            if isinstance(a, Tensor):
                device = a.device.type
                break
        with torch.autocast(device, enabled=False):
            upcast = [a.float() if isinstance(a, Tensor) and a.is_floating_point() else a
                      for a in args]  # fmt: skip
            return cls.forward(self, *upcast, **kwargs)

    with _float32_lock:
        if cls not in _float32_classes:
            attrs = {"forward": forward, "float32_head": True, "__module__": __name__}
            _float32_classes[cls] = type(f"Float32{cls.__name__}", (cls,), attrs)
        return _float32_classes[cls]


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
