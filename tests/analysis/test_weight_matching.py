"""Weight matching (Ainsworth et al. 2022): a permutation of hidden units leaves the function
unchanged, matching a permuted net recovers the original exactly, and aligning two trained
MLPs lowers the barrier of the line between them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analysis.interpolate import InterpolationSpec, compute_interpolation
from landscape.analysis.permutation_specs import align_state, permutation_spec
from landscape.analysis.weight_matching import (
    permute_state,
    random_permutations,
    weight_matching,
)
from landscape.errors import SpecError
from landscape.models import build
from landscape.specs import DataSpec, EngineOptions, TrainSpec
from landscape.storage.interpolation import read_interpolation
from landscape.train import train_model

SHAPE = {"in_channels": 1, "num_classes": 10, "image_size": 8}
NETS = [
    ("mlp-plain", {"depth": 2, "width": 16}),
    ("mlp-residual", {"depth": 2, "width": 16}),
    ("resnet20", {}),
    ("resnet20", {"shortcut": "projection"}),
    ("resnet20-noshort", {}),
]


def _net(name: str, args: dict[str, object]) -> nn.Module:
    """A zoo net with random BN statistics and affine terms, so that permuting them matters."""
    model = build(name, **SHAPE, **args).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model


@pytest.mark.parametrize(("name", "args"), NETS, ids=lambda v: str(v))
def test_a_permuted_net_is_the_same_function_and_matching_undoes_it(
    name: str, args: dict[str, object]
) -> None:
    model = _net(name, args)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    spec = permutation_spec(model)
    shuffled = permute_state(original, spec, random_permutations(spec, original, seed=1))
    assert any(not torch.equal(original[k], shuffled[k]) for k in original)
    twin = build(name, **SHAPE, **args).eval()
    twin.load_state_dict(shuffled)
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-4, atol=1e-5)

    perms, _ = weight_matching(spec, original, shuffled)
    recovered = permute_state(shuffled, spec, perms)
    for key, value in original.items():
        assert torch.equal(recovered[key], value), key


def test_only_the_zoos_mlps_and_resnets_are_matched() -> None:
    with pytest.raises(SpecError, match="weight matching knows"):
        permutation_spec(nn.Sequential(nn.Linear(4, 4)))


def test_alignment_lowers_the_barrier_between_two_trained_mlps(tmp_path: Path) -> None:
    """Two pairs of seeds of a small MLP on digits: the aligned line's loss barrier is below
    the raw line's, and the alignment raised the objective it maximizes."""
    data = DataSpec(name="digits", train_size=512, test_size=128)
    args = {"depth": 1, "width": 32}
    paths = []
    for seed in range(4):
        path = tmp_path / f"mlp-{seed}.pt"
        train_model(TrainSpec(model="mlp-plain", model_args=dict(args), data=data, epochs=3,
                              seed=seed, device="cpu"), path)  # fmt: skip
        paths.append(str(path))
    for a, b in ((paths[0], paths[1]), (paths[2], paths[3])):
        spec = InterpolationSpec(a, b, data=data, n_t=6, align="weights", splits=("train",))
        out = compute_interpolation(
            spec, tmp_path / f"{Path(a).stem}.h5", options=EngineOptions(device="cpu", workers=1)
        )
        result = read_interpolation(out)
        assert result.unaligned_barriers is not None
        assert result.barriers["train_loss"] < result.unaligned_barriers["train_loss"]
        alignment = result.settings["alignment"]
        assert alignment["objective_after"] > alignment["objective_before"]
        assert alignment["units_moved"] > 0
        # both lines share their ends: the aligned θ₂ is the same function as θ₂
        assert result.unaligned is not None
        np.testing.assert_allclose(result.values["train_loss"][[0, -1]],
                                   result.unaligned["train_loss"][[0, -1]], rtol=1e-5)  # fmt: skip


def test_align_state_reports_what_it_did() -> None:
    model = _net("mlp-plain", {"depth": 1, "width": 8})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    aligned, info = align_state(model, state, state)
    assert info["units_moved"] == 0 and info["permutations"] == 3  # stem, fc1, fc2
    assert info["objective_after"] == pytest.approx(info["objective_before"])
    assert all(torch.equal(aligned[k], state[k]) for k in state)
