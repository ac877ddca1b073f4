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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.engine.fx_trace import symbolic_trace

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
    model: nn.Module, params: Mapping[str, Tensor], directions: Sequence[Mapping[str, Tensor]]
) -> FoldedModel | None:
    """Fold every eval-mode BN that directly follows a conv/linear layer and whose affine
    parameters no direction moves. ``None`` when nothing can be folded (or tracing fails);
    the caller then evaluates the model as it is.
    """
    try:
        gm = symbolic_trace(copy.deepcopy(model).eval())
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
    directions: Sequence[Mapping[str, Tensor]],
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


class DenseConv2d(nn.Module):
    """A 2-d convolution on a tiny input (e.g. 3×3 on 2×2) as one matmul with the exact
    linear map it computes: ``out = flat(x) @ weight + bias`` over NHWC-flattened samples.

    The map's entries are the conv's weights (or exact zeros), so results match the conv to fp32
    rounding; the taps that only ever see zero padding are no longer computed.
    """

    def __init__(self, out_shape: tuple[int, int, int], weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_shape = out_shape  # (C_out, H_out, W_out)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)  # a view for channels_last input
        out = flat @ self.weight if self.bias is None else torch.addmm(self.bias, flat, self.weight)
        c, h, w = self.out_shape
        return out.view(n, h, w, c).permute(0, 3, 1, 2)  # channels_last strides


_MAX_DENSE_ELEMENTS = 1 << 22  # 16 MiB of float32 per dense map (and as much per direction)


def densify_small_convs(
    module: nn.Module,
    params: dict[str, Tensor],
    directions: list[dict[str, Tensor]],
    example: Tensor,
) -> int:
    """Replace each ``Conv2d`` whose input has fewer pixels than its kernel has taps (a 3×3
    conv on 2×2 maps: most taps multiply zero padding) by a ``DenseConv2d``, rewriting θ and
    the directions the same way (the map is linear in the weights). ``module`` must be a
    ``torch.fx.GraphModule`` (as ``fold_batchnorm`` returns); it and the dicts change in place.
    Returns how many convs were replaced.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(module, fx.GraphModule):
        return 0
    try:
        ShapeProp(module).propagate(example[:2].to("cpu", torch.float32))
    except Exception as exc:
        log.info("conv densifying skipped: shape propagation failed (%s)", exc)
        return 0
    modules = dict(module.named_modules())
    call_counts = Counter(n.target for n in module.graph.nodes if n.op == "call_module")
    n_dense = 0
    for node in module.graph.nodes:
        conv = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(conv, nn.Conv2d) or call_counts[node.target] != 1:
            continue
        arg = node.args[0] if node.args else None
        in_meta = arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None
        out_meta = node.meta.get("tensor_meta")
        if in_meta is None or out_meta is None or conv.padding_mode != "zeros":
            continue
        _, c_in, h, w = in_meta.shape
        _, c_out, h_out, w_out = out_meta.shape
        kh, kw = conv.kernel_size
        n_in, n_out = c_in * h * w, c_out * h_out * w_out
        if conv.groups != 1 or h * w >= kh * kw or n_in * n_out > _MAX_DENSE_ELEMENTS:
            continue
        name = str(node.target)
        w_key, b_key = f"{name}.weight", f"{name}.bias"
        if w_key not in params:
            continue

        def dense(
            weight: Tensor, conv: nn.Conv2d = conv, shape: tuple[int, ...] = (c_in, h, w)
        ) -> Tensor:
            c, hh, ww = shape
            n = c * hh * ww
            basis = torch.eye(n, dtype=torch.float64).view(n, hh, ww, c).permute(0, 3, 1, 2)
            out = torch.nn.functional.conv2d(
                basis, weight.double(), None, conv.stride, conv.padding, conv.dilation
            )
            return out.permute(0, 2, 3, 1).reshape(n, -1).to(weight.dtype).contiguous()

        def spread(bias: Tensor, n_pix: int = h_out * w_out) -> Tensor:
            return bias.repeat(n_pix)  # NHWC order: the channel varies fastest

        params[w_key] = dense(params[w_key])
        for d in directions:
            d[w_key] = dense(d[w_key])
        bias = params.get(b_key)
        if bias is not None:
            params[b_key] = spread(bias)
            for d in directions:
                d[b_key] = spread(d[b_key]) if b_key in d else torch.zeros_like(params[b_key])
        new = DenseConv2d((c_out, h_out, w_out), params[w_key].clone(), None)
        if bias is not None:
            new.bias = nn.Parameter(params[b_key].clone(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, new)
        n_dense += 1
    if n_dense:
        module.recompile()
    return n_dense
