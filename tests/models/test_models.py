"""The zoo: every registered model builds for digits- and CIFAR-shaped data, parameter counts
match the published ones, and the -noshort twins differ only in the identity add."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.errors import SpecError, UnknownNameError
from landscape.models import (
    build,
    list_models,
    model_identity,
    model_spatial_dims,
    register_model,
)
from landscape.models.resnet import CifarResNet

ALL_MODELS = [info.name for info in list_models()]
HEAVY = {"resnet110", "resnet110-noshort", "densenet-bc-100"}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_listing_is_sorted_and_described() -> None:
    names = [info.name for info in list_models()]
    assert names == sorted(names)
    expected = {f"resnet{d}{s}" for d in (20, 32, 44, 56, 110) for s in ("", "-noshort")}
    expected |= {"densenet-bc-40", "densenet-bc-100", "mlp-plain", "mlp-residual"}
    assert expected <= set(names)
    assert all(info.description.strip() for info in list_models())


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 8, 10), (3, 32, 100)])
def test_every_model_builds_and_runs(name: str, channels: int, size: int, classes: int) -> None:
    if name in HEAVY and size == 32:
        size = 16  # same code path, a quarter of the CPU time
    for dims in model_spatial_dims(name):  # images (C, S, S), signals (C, S), or both
        shape = {"in_channels": channels, "num_classes": classes, "image_size": size}
        if dims != 2:
            shape["spatial_dims"] = dims
        model = build(name, **shape)
        out = model(torch.randn(2, channels, *(size,) * dims))
        assert out.shape == (2, classes)
        assert torch.isfinite(out).all()
        assert model_identity(model) == (name, shape)


# He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M (option A shortcuts, CIFAR-10).
@pytest.mark.parametrize(
    ("depth", "published_m"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)]
)
def test_resnet_parameter_counts_match_the_paper(depth: int, published_m: float) -> None:
    model = build(f"resnet{depth}", in_channels=3, num_classes=10, image_size=32)
    # The paper rounds to two significant digits.
    assert round(count(model) / 1e6, 2 if depth < 100 else 1) == published_m


def test_resnet_exact_counts_from_the_architecture() -> None:
    """Independent arithmetic: conv weights + BN (2 per channel) + the linear layer."""

    def expected(n: int) -> int:
        total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
        in_planes = 16
        for planes in (16, 32, 64):
            for _ in range(n):
                total += in_planes * planes * 9 + planes * planes * 9 + 4 * planes
                in_planes = planes
        return total + 64 * 10 + 10

    for depth in (20, 56, 110):
        assert count(build(f"resnet{depth}")) == expected((depth - 2) // 6)


def test_densenet_bc_100_size_matches_the_paper() -> None:
    # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12) has 0.8M parameters.
    assert round(count(build("densenet-bc-100")) / 1e6, 1) == 0.8


@pytest.mark.parametrize("depth", [20, 56])
def test_noshort_twin_has_same_parameters_and_differs_only_in_the_add(depth: int) -> None:
    residual = build(f"resnet{depth}", in_channels=1, image_size=8)
    plain = build(f"resnet{depth}-noshort", in_channels=1, image_size=8)
    assert [(k, v.shape) for k, v in residual.state_dict().items()] == [
        (k, v.shape) for k, v in plain.state_dict().items()
    ]
    plain.load_state_dict(residual.state_dict())
    residual.eval()
    plain.eval()
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(residual(x), plain(x))  # the shortcut is really there
    # Hand check of one block: plain block + option-A shortcut == residual block.
    block_r, block_p = residual.layer2[0], plain.layer2[0]
    h = torch.randn(2, 16, 8, 8)
    shortcut = torch.zeros(2, 32, 4, 4)
    shortcut[:, 8:24] = h[:, :, ::2, ::2]
    pre_relu = block_p.bn2(block_p.conv2(torch.relu(block_p.bn1(block_p.conv1(h)))))
    torch.testing.assert_close(block_r(h), torch.relu(pre_relu + shortcut))


def test_projection_shortcut_is_option_b() -> None:
    model = build("resnet20", shortcut="projection")
    # Option B adds two 1×1 projections + BN: 16·32 + 2·32 + 32·64 + 2·64.
    assert count(model) - count(build("resnet20")) == 16 * 32 + 64 + 32 * 64 + 128
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mlp_plain_and_residual_share_parameters_and_kwargs() -> None:
    plain = build("mlp-plain", in_channels=1, image_size=8, depth=3, width=32)
    residual = build("mlp-residual", in_channels=1, image_size=8, depth=3, width=32)
    # stem 64·32+32, 3 blocks × 2 × (32·32+32), head 32·10+10
    assert count(plain) == count(residual) == 64 * 32 + 32 + 6 * (32 * 32 + 32) + 330
    assert model_identity(plain) == (
        "mlp-plain",
        {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 3, "width": 32},
    )


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownNameError, match="resnet20-noshort") as info:
        build("resnet21")
    assert "'resnet21'" in str(info.value)


def test_bad_arguments_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="depth"):
        build("mlp-plain", in_channels=1, image_size=8, depth=0)
    with pytest.raises(SpecError, match="bogus"):
        build("resnet20", bogus=1)
    with pytest.raises(SpecError, match="num_classes"):
        build("resnet20", num_classes=0)
    with pytest.raises(UnknownNameError, match="projection"):
        build("resnet20", shortcut="none")
    with pytest.raises(SpecError, match="6n\\+2"):
        CifarResNet(21)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="resnet20"):

        @register_model("resnet20", "again")
        def again(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
            return nn.Linear(1, 1)
