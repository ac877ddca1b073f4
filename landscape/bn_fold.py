"""Fold eval-mode BatchNorm into the convolution (or linear layer) before it — weights *and*
directions — so every grid point runs a plain conv net.

Eval-mode BN is a per-channel affine map ``BN(z) = z·s + (β − μ·s)`` with ``s = γ/√(var+ε)``
(Ioffe & Szegedy 2015, §3.1, inference form). A conv is linear in its weight, so when a
direction leaves BN's ``γ, β`` untouched (``ignore="biasbn"``)::

    BN(conv(x, W + aδ + bη) + c) = conv(x, W·s + a(δ·s) + b(η·s)) + (c·s + β − μ·s)

The scaling is applied to θ and to each direction once; the grid point formula stays
``θ' + aδ' + bη'``. BN layers whose parameters a direction moves are left in place (the same
generic rule, just not applicable), as is any model torch.fx cannot trace.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class FoldedModel:
    """A traced copy of the model with BN folded in, and θ' and directions for its names."""

    module: nn.Module
    params: dict[str, Tensor]
    directions: list[dict[str, Tensor]]
    n_folded: int


def fold_batchnorm(
    model: nn.Module, params: Mapping[str, Tensor], directions: list[Mapping[str, Tensor]]
) -> FoldedModel | None:
    """Fold every eval-mode BN that directly follows a conv/linear layer and whose affine
    parameters no direction moves. ``None`` when nothing can be folded (or tracing fails);
    the caller then evaluates the model as it is.
    """
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:  # any untraceable forward: fall back to the unfolded model
        log.info("BN folding skipped: torch.fx cannot trace %s (%s)", type(model).__name__, exc)
        return None
    new_params = {n: p.detach().clone() for n, p in params.items()}
    new_dirs = [{n: d.detach().clone() for n, d in dir_.items()} for dir_ in directions]
    modules = dict(gm.named_modules())
    call_counts = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    n_folded = 0
    for node in list(gm.graph.nodes):
        prev = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(prev, fx.Node) or not _foldable_pair(
            node, prev, modules, call_counts, directions
        ):
            continue
        _fold_pair(str(prev.target), str(node.target), modules, new_params, new_dirs)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        gm.delete_submodule(str(node.target))
        n_folded += 1
    if n_folded == 0:
        return None
    gm.graph.lint()
    gm.recompile()
    names = {n for n, _ in gm.named_parameters()}
    if names != set(new_params):
        log.warning("BN folding skipped: parameter names changed (%s)", names ^ set(new_params))
        return None
    return FoldedModel(gm, new_params, new_dirs, n_folded)


def _foldable_pair(
    bn_node: fx.Node,
    prev: fx.Node,
    modules: dict[str, nn.Module],
    call_counts: Counter[object],
    directions: list[Mapping[str, Tensor]],
) -> bool:
    bn = modules.get(str(bn_node.target))
    layer = modules.get(str(prev.target)) if prev.op == "call_module" else None
    if not isinstance(bn, _BatchNorm) or not isinstance(layer, _FOLDABLE):
        return False
    if bn.running_mean is None or bn.running_var is None:
        return False  # no running statistics: eval mode still normalizes by batch statistics
    if len(prev.users) != 1 or call_counts[prev.target] != 1 or call_counts[bn_node.target] != 1:
        return False  # the pre-BN output is used elsewhere, or the module is reused
    if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
        return False
    bn_names = [f"{bn_node.target}.{k}" for k, _ in bn.named_parameters(recurse=False)]
    # a moved γ or β makes s or the shift differ per grid point: not a fixed fold
    return not any(bool(d[n].any()) for d in directions for n in bn_names if n in d)


def _fold_pair(
    layer_name: str,
    bn_name: str,
    modules: dict[str, nn.Module],
    params: dict[str, Tensor],
    directions: list[dict[str, Tensor]],
) -> None:
    """Rewrite ``params``/``directions`` in place: the layer absorbs the BN, the BN's go away."""
    layer, bn = modules[layer_name], modules[bn_name]
    assert isinstance(bn, _BatchNorm) and bn.running_var is not None
    assert bn.running_mean is not None
    w_key, b_key = f"{layer_name}.weight", f"{layer_name}.bias"
    weight = params[w_key]
    gamma = params.pop(f"{bn_name}.weight", None)
    beta = params.pop(f"{bn_name}.bias", None)
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma64 = gamma.double() if gamma is not None else torch.ones_like(var)
    beta64 = beta.double() if beta is not None else torch.zeros_like(var)
    # Ioffe & Szegedy 2015, §3.1: BN(z) = z·s + (β − μ·s), s = γ/√(var+ε); in float64
    s = gamma64 / torch.sqrt(var + bn.eps)
    shift = beta64 - mean * s
    shape = (-1,) + (1,) * (weight.dim() - 1)
    bias = params.get(b_key)
    params[w_key] = (weight.double() * s.view(shape)).to(weight.dtype)
    bias64 = bias.double() if bias is not None else torch.zeros_like(s)
    params[b_key] = (bias64 * s + shift).to(weight.dtype)
    for d in directions:
        d.pop(f"{bn_name}.weight", None)
        d.pop(f"{bn_name}.bias", None)
        d[w_key] = (d[w_key].double() * s.view(shape)).to(weight.dtype)
        d_bias = d.get(b_key)
        d[b_key] = (
            (d_bias.double() * s).to(weight.dtype)
            if d_bias is not None
            else torch.zeros_like(params[b_key])
        )
    if getattr(layer, "bias", None) is None:
        layer.bias = nn.Parameter(torch.zeros_like(params[b_key]))
