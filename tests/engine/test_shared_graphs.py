"""Surfaces of one architecture share compiled graphs whatever their weights, BN-folded
GraphModules included, and a long-lived process keeps a bounded number of them: it does not
run out of dynamo's recompile budget and go eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.engine import shared_graphs
from landscape.engine.bn_fold import fold_batchnorm
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.forward import batch_sums
from landscape.specs import EngineOptions
from tests.engine.test_engine import ConvBNNet, assert_same, mlp_bn, setup

FORCED = EngineOptions(workers=1, compile="always")


def _folded(seed: int, make: type[nn.Module] | object = ConvBNNet) -> nn.Module:
    torch.manual_seed(seed)
    model, dirs, _ = setup(make)  # type: ignore[arg-type]
    params = {n: p.detach() for n, p in model.named_parameters()}
    folded = fold_batchnorm(model, params, dirs)
    assert folded is not None
    return folded.module


def _key(module: nn.Module, n: int = 96, precision: str = "fp32") -> str:
    params = dict(module.named_parameters())
    return shared_graphs.graph_key(module, params, [torch.zeros(n, 1, 8, 8)], (precision,))


def test_one_signature_per_architecture_shapes_and_precision() -> None:
    a, b = _folded(0), _folded(1)
    assert type(a) is not type(b)  # torch.fx: a class per GraphModule
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert _key(a) == _key(b)  # other weights, same graph
    assert _key(a) != _key(a, n=48)
    assert _key(a) != _key(a, precision="bf16")
    assert _key(a) != _key(_folded(0, mlp_bn))
    shared_graphs.share_class(a, _key(a))
    shared_graphs.share_class(b, _key(b))
    assert type(a) is type(b)
    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():  # each keeps its own weights
        assert not torch.equal(a(x), b(x))


def test_the_cache_keeps_the_most_recently_used_architectures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_graphs, "_entries", type(shared_graphs._entries)())
    first = shared_graphs.compiled_for("arch-0", batch_sums)  # lazy: nothing compiles yet
    assert shared_graphs.compiled_for("arch-0", batch_sums) is first
    for i in range(1, 3 * shared_graphs.MAX_ARCHITECTURES):
        shared_graphs.compiled_for(f"arch-{i}", batch_sums)
        shared_graphs.compiled_for("arch-0", batch_sums)  # used again: kept
    assert shared_graphs.cached_architectures() == shared_graphs.MAX_ARCHITECTURES
    assert shared_graphs.compiled_for("arch-0", batch_sums) is first
    assert not shared_graphs.has_compiled("arch-1")  # evicted


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_forty_bn_folded_surfaces_stay_compiled_with_bounded_graphs() -> None:
    """40 two-split BN-folded surfaces (2×2 grids), each with its own weights and directions,
    in one process: the first compiles one graph per split, every later one reuses them, and
    the last is still computed by the compiled path, equal to the naive loop. Before, each
    surface added two graphs, and past dynamo's budget (~32 surfaces) the rest ran eager."""
    grid = np.stack(np.meshgrid([-0.5, 0.5], [-0.5, 0.5]), axis=-1).reshape(-1, 2)
    graphs: list[int] = []
    for i in range(40):
        torch.manual_seed(100 + i)
        model, dirs, data = setup(ConvBNNet, n=24)
        with GridEvaluator(model, dirs, data, options=FORCED, n_points=len(grid)) as ev:
            got = ev.evaluate(grid)
            info = ev.describe()
        assert info["bn_folded"] > 0 and info["compiled"] is True, (i, info)
        assert info["compile_reused"] or i == 0, (i, info)
        graphs.append(_unique_graphs())
        assert graphs[-1] == graphs[0], f"surface {i} compiled new graphs: {graphs}"
    assert shared_graphs.cached_architectures() <= shared_graphs.MAX_ARCHITECTURES
    assert_same(got, reference_evaluate(model, dirs, grid, data), len(data["test"][0]))
