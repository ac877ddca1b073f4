"""The linear path between two checkpoints: every value against a naive loop written here
(interpolate the state dicts by hand, ``update_bn``, a DataLoader in eval mode), the barrier
against its definition, the BN re-estimation against the subset's own statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from landscape.analysis.bn_stats import BN_BATCH_SIZE, bn_subset_indices, recompute_bn
from landscape.analysis.interpolate import (
    InterpolationSpec,
    barriers,
    compute_interpolation,
    interpolate_state,
)
from landscape.data import load_data
from landscape.errors import CheckpointError, SpecError, SurfaceFileError, UnknownNameError
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, EngineOptions, TrainSpec
from landscape.storage import read_directions
from landscape.storage.interpolation import read_interpolation
from landscape.train import train_model

DATA = DataSpec(name="digits", train_size=128, test_size=64)
CPU = EngineOptions(device="cpu", workers=1)
NETS = {"mlp": ("mlp-plain", {"depth": 1, "width": 32}, 4), "resnet": ("resnet20", {}, 1)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Per net, two seeds trained for a few steps on digits."""
    folder = tmp_path_factory.mktemp("interpolate")
    found = {}
    for label, (model, args, epochs) in NETS.items():
        paths = []
        for seed in (0, 1):
            path = folder / f"{label}-{seed}.pt"
            spec = TrainSpec(model=model, model_args=dict(args), data=DATA, epochs=epochs,
                             seed=seed, device="cpu")  # fmt: skip
            train_model(spec, path)
            paths.append(str(path))
        found[label] = (paths[0], paths[1])
    return found


def _naive_path(
    a: str, b: str, t: np.ndarray, bn: str, subset: int, seed: int
) -> dict[str, np.ndarray]:
    """The path the slow, obvious way: each t's state dict by hand, torch's own ``update_bn``
    on the same subset, then every batch of a DataLoader in eval mode."""
    model, _ = load_checkpoint(a)
    state_a = {k: v.clone() for k, v in model.state_dict().items()}  # not the live tensors
    state_b = load_checkpoint(b)[0].state_dict()
    data = {s: load_data(DATA, s) for s in ("train", "test")}
    x_train = data["train"][0]
    keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:subset]
    inputs = x_train[keep.sort().values]
    out = {f"{s}_{m}": np.empty(len(t)) for s in data for m in ("loss", "acc")}
    for i, value in enumerate(t.tolist()):
        state = {
            k: (1 - value) * v + value * state_b[k] if v.is_floating_point() else v
            for k, v in state_a.items()
        }
        model.load_state_dict(state)
        if bn == "recompute":
            update_bn(DataLoader(inputs, batch_size=BN_BATCH_SIZE), model)
        model.eval()
        with torch.no_grad():
            for split, (x, y) in data.items():
                total, correct = 0.0, 0
                for xb, yb in DataLoader(TensorDataset(x, y), batch_size=64):
                    logits = model(xb)
                    total += float(F.cross_entropy(logits, yb, reduction="sum"))
                    correct += int((logits.argmax(1) == yb).sum())
                out[f"{split}_loss"][i] = total / len(y)
                out[f"{split}_acc"][i] = correct / len(y)
    return out


@pytest.mark.parametrize(
    ("net", "bn"), [("mlp", "eval"), ("resnet", "eval"), ("resnet", "recompute")]
)
def test_the_path_equals_the_naive_loop(
    checkpoints: dict[str, tuple[str, str]], tmp_path: Path, net: str, bn: str
) -> None:
    a, b = checkpoints[net]
    spec = InterpolationSpec(a, b, data=DATA, n_t=3, bn=bn, bn_subset=96, bn_seed=3)  # type: ignore[arg-type]
    out = compute_interpolation(spec, tmp_path / "line.h5", options=CPU)
    result = read_interpolation(out)
    expected = _naive_path(a, b, result.t, bn, 96, 3)
    np.testing.assert_allclose(result.t, [0.0, 0.5, 1.0])
    for metric, values in expected.items():
        np.testing.assert_allclose(result.values[metric], values, rtol=1e-5, atol=1e-6)
        if metric.endswith("_loss"):
            barrier = values.max() - (values[0] + values[-1]) / 2
        else:
            barrier = (values[0] + values[-1]) / 2 - values.min()
        assert result.barriers[metric] == pytest.approx(barrier, rel=1e-4, abs=1e-6)
    # the stored direction rebuilds θ₂ from θ₁: a surface reader can rebuild every point
    (direction,) = read_directions(out)
    params_a = dict(load_checkpoint(a)[0].named_parameters())
    for name, p in load_checkpoint(b)[0].named_parameters():
        torch.testing.assert_close(params_a[name].detach() + direction[name], p.detach())
    settings = result.settings
    assert settings["bn"] == bn and settings["target_checkpoint_sha256"]
    assert settings["bn_subset_used"] == (96 if bn == "recompute" else 0)


def test_recompute_puts_the_subsets_own_statistics_in_bn(
    checkpoints: dict[str, tuple[str, str]],
) -> None:
    """The first BN layer's input is the stem conv's output, whatever BN does: its
    re-estimated running mean and variance are that input's per-channel mean and (unbiased)
    variance over the subset, at a point between the nets, whatever the old buffers held."""
    a, b = checkpoints["resnet"]
    model, _ = load_checkpoint(a)
    model.load_state_dict(
        interpolate_state(model.state_dict(), load_checkpoint(b)[0].state_dict(), 0.4)
    )
    x = load_data(DATA, "train")[0]
    inputs = x[bn_subset_indices(len(x), 100, seed=1)]
    with torch.no_grad():
        model.bn1.running_mean.fill_(5.0)  # stale statistics must not leak into the result
        model.bn1.running_var.fill_(9.0)
        assert recompute_bn(model, inputs) == sum(
            isinstance(m, nn.BatchNorm2d) for m in model.modules()
        )
        assert not model.training and model.bn1.momentum == 0.1  # eval, momentum restored
        features: Tensor = model.conv1(inputs)
    mean = features.mean(dim=(0, 2, 3))
    var = features.permute(1, 0, 2, 3).reshape(features.shape[1], -1).var(dim=1)
    torch.testing.assert_close(model.bn1.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bn1.running_var, var, rtol=1e-4, atol=1e-6)


def test_the_bn_subset_is_fixed_by_its_seed() -> None:
    first = bn_subset_indices(1000, 100, seed=0)
    assert torch.equal(first, bn_subset_indices(1000, 100, seed=0))
    assert not torch.equal(first, bn_subset_indices(1000, 100, seed=1))
    assert len(first.unique()) == 100 and bool((first.diff() > 0).all())
    assert len(bn_subset_indices(50, 100, seed=0)) == 50  # a subset larger than the split


def test_barrier_is_taken_between_the_ends_only() -> None:
    t = np.linspace(-0.5, 1.5, 9)  # 0 and 1 at indices 2 and 6
    loss = np.array([9.0, 5, 1.0, 2, 4, 2, 3.0, 7, 9])
    acc = np.array([0.0, 0.1, 0.9, 0.8, 0.5, 0.8, 0.7, 0.2, 0.0])
    found = barriers(t, {"train_loss": loss, "train_acc": acc})
    assert found["train_loss"] == pytest.approx(4 - 2)
    assert found["train_acc"] == pytest.approx(0.8 - 0.5)


def test_a_grid_without_both_ends_is_refused() -> None:
    with pytest.raises(SpecError, match="misses t = 1"):
        InterpolationSpec("a.pt", "b.pt", t_range=(0.0, 1.0), n_t=1)
    with pytest.raises(SpecError, match="misses t = 0"):
        InterpolationSpec("a.pt", "b.pt", t_range=(-0.3, 1.0), n_t=4)
    with pytest.raises(UnknownNameError, match="bn"):
        InterpolationSpec("a.pt", "b.pt", bn="train")  # type: ignore[arg-type]


def test_a_done_file_is_returned_and_another_request_refused(
    checkpoints: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    a, b = checkpoints["mlp"]
    spec = InterpolationSpec(a, b, data=DATA, n_t=3)
    out = compute_interpolation(spec, tmp_path / "line.h5", options=CPU)
    written = out.stat().st_mtime_ns
    assert compute_interpolation(spec, out, options=CPU) == out
    assert out.stat().st_mtime_ns == written
    with pytest.raises(SurfaceFileError, match="another surface or interpolation"):
        compute_interpolation(InterpolationSpec(b, a, data=DATA, n_t=3), out, options=CPU)


def test_two_architectures_are_refused(
    checkpoints: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    spec = InterpolationSpec(checkpoints["mlp"][0], checkpoints["resnet"][0], data=DATA, n_t=3)
    with pytest.raises(CheckpointError, match="not the same architecture"):
        compute_interpolation(spec, tmp_path / "line.h5", options=CPU)
    assert not (tmp_path / "line.h5").exists()
