"""1-D ResNets and their plain twins: the same parameters, only the identity add differs, BN
folds into their Conv1d layers exactly, and each model takes only the data it declares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.engine.bn_fold import fold_batchnorm
from landscape.errors import SpecError
from landscape.models import (
    build,
    check_model_args,
    list_models,
    model_spatial_dims,
    register_model,
)
from landscape.models.resnet1d import DEPTHS, ResNet1d

SIGNALS = {"in_channels": 1, "num_classes": 10, "image_size": 40, "spatial_dims": 1}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _trained_statistics(model: nn.Module) -> None:
    """Running statistics far from BN's initial ones, so a wrong fold would show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("depth", DEPTHS)
def test_twins_share_parameters_and_differ_only_in_the_add(depth: int) -> None:
    residual = build(f"resnet1d-{depth}", **SIGNALS)
    plain = build(f"resnet1d-{depth}-noshort", **SIGNALS)
    assert [(k, v.shape) for k, v in residual.state_dict().items()] == [
        (k, v.shape) for k, v in plain.state_dict().items()
    ]
    plain.load_state_dict(residual.state_dict())
    residual.eval()
    plain.eval()
    x = torch.randn(4, 1, 40)
    assert not torch.allclose(residual(x), plain(x))
    # hand check of a stage's first block: plain block + option-A shortcut == residual block
    block_r, block_p = residual.layer2[0], plain.layer2[0]
    h = torch.randn(2, 16, 40)
    shortcut = torch.zeros(2, 32, 20)
    shortcut[:, 8:24] = h[:, :, ::2]
    pre_relu = block_p.bn2(block_p.conv2(torch.relu(block_p.bn1(block_p.conv1(h)))))
    torch.testing.assert_close(block_r(h), torch.relu(pre_relu + shortcut))


def test_parameter_count_from_the_architecture() -> None:
    """Independent arithmetic: length-3 conv weights + BN (2 per channel) + the linear layer."""
    n = 1  # depth 8
    total = 1 * 16 * 3 + 2 * 16
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += in_planes * planes * 3 + planes * planes * 3 + 4 * planes
            in_planes = planes
    assert count(build("resnet1d-8", **SIGNALS)) == total + 64 * 10 + 10


@pytest.mark.parametrize("name", ["resnet1d-8", "resnet1d-8-noshort"])
def test_batchnorm_folds_into_conv1d(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, **SIGNALS)
    _trained_statistics(model)
    model.eval()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    direction = {
        n: torch.randn_like(p) if "bn" not in n else torch.zeros_like(p) for n, p in params.items()
    }
    folded = fold_batchnorm(model, params, [direction])
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert folded is not None and folded.n_folded == n_bn == 7
    x = torch.randn(8, 1, 40)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(direction[name], alpha=0.3)  # θ + 0.3δ in the original net
        expected = model(x)
        moved = {n: folded.params[n] + 0.3 * folded.directions[0][n] for n in folded.params}
        got = torch.func.functional_call(folded.module, moved, (x,))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_each_model_takes_only_the_data_it_declares() -> None:
    dims = {info.name: info.spatial_dims for info in list_models()}
    assert dims["resnet1d-20"] == (1,) and dims["resnet20"] == (2,)
    assert dims["mlp-plain"] == dims["mlp-residual"] == (1, 2)
    assert model_spatial_dims("resnet1d-8-noshort") == (1,)
    with pytest.raises(SpecError, match=r"'resnet20' takes 2-D images.*resnet1d-8"):
        build("resnet20", **SIGNALS)
    with pytest.raises(SpecError, match=r"'resnet1d-8' takes 1-D signals.*resnet20"):
        build("resnet1d-8", in_channels=1, image_size=8)
    with pytest.raises(SpecError, match="set by the data set"):
        check_model_args("mlp-plain", {"spatial_dims": 1})


def test_mlps_flatten_signals_and_record_their_shape() -> None:
    model = build("mlp-plain", **SIGNALS, depth=1, width=8)
    assert model.stem.in_features == 40  # type: ignore[union-attr]
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)
    assert model.landscape_model["args"]["spatial_dims"] == 1  # type: ignore[index]
    image = build("mlp-plain", in_channels=1, image_size=8, depth=1, width=8)
    assert "spatial_dims" not in image.landscape_model["args"]  # type: ignore[operator]


def test_a_builder_for_both_kinds_must_be_told_which() -> None:
    with pytest.raises(ValueError, match="no spatial_dims"):

        @register_model("both-blind", "takes both, cannot tell them apart", spatial_dims=(1, 2))
        def blind(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
            return nn.Linear(1, 1)


def test_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(SpecError, match="6n\\+2"):
        ResNet1d(9)
