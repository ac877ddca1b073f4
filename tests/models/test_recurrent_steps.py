"""The recurrent nets' sequence length: ``pixels_per_step`` pixels of the row-major flattened
image per time step (default one row). Steps and shapes on digits and MNIST, the default is
the row-by-row net exactly, only ``cell.ih``'s input width changes, bad values are refused,
gradient flow through time has one entry per step and equals autograd, and the net trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.analysis.gradient_flow import gradient_flow
from landscape.data import load_data
from landscape.errors import SpecError
from landscape.models import build, check_model_args, model_identity
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, TrainSpec
from landscape.train import train_model

DIGITS = {"in_channels": 1, "num_classes": 10, "image_size": 8}
MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
KINDS = tuple(GATES)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ steps and shapes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("shape", "pixels", "steps"),
    [
        (DIGITS, 1, 64),
        (DIGITS, 2, 32),
        (DIGITS, 8, 8),  # one row: the default
        (DIGITS, 0, 8),  # 0 names the default
        (DIGITS, 16, 4),  # two rows a step
        (MNIST, 28, 28),
        (MNIST, 4, 196),
        (MNIST, 1, 784),  # Le et al. 2015's pixel-by-pixel sequential MNIST
    ],
)
def test_steps_and_shapes(kind: str, shape: dict[str, int], pixels: int, steps: int) -> None:
    model = build(kind, **shape, hidden=6, pixels_per_step=pixels)
    size = shape["image_size"]
    features = pixels or size
    assert model.steps == steps and model.features == features
    assert model.steps * model.pixels_per_step == size * size
    s = shapes(model)
    assert s["cell.ih.weight"] == (GATES[kind] * 6, features)
    assert s["cell.hh.weight"] == (GATES[kind] * 6, 6)
    assert s["head.weight"] == (10, 6)
    x = torch.randn(3, 1, size, size)
    assert model.sequence(x).shape == (3, steps, features)
    assert model(x).shape == (3, 10)


def test_sequence_is_the_row_major_flattened_image() -> None:
    model = build("rnn", **DIGITS, hidden=3, pixels_per_step=2)
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    seq = model.sequence(x)
    assert seq[0, 0].tolist() == [0, 1] and seq[0, 1].tolist() == [2, 3]
    assert seq[0, 4].tolist() == [8, 9] and seq[0, -1].tolist() == [62, 63]
    torch.testing.assert_close(seq.reshape(1, 64), x.reshape(1, 64))


def test_channels_side_by_side_as_in_the_row_by_row_net() -> None:
    """Several channels: step ``t`` holds channel 0's ``p`` pixels, then channel 1's, …, the
    order the row-by-row net gives a row (``C·W``), so ``p = W`` is that net."""
    model = build("gru", in_channels=3, num_classes=10, image_size=4, hidden=3, pixels_per_step=2)
    x = torch.arange(48.0).reshape(1, 3, 4, 4)
    seq = model.sequence(x)
    assert seq.shape == (1, 8, 6)
    assert seq[0, 0].tolist() == [0, 1, 16, 17, 32, 33]
    assert seq[0, 3].tolist() == [6, 7, 22, 23, 38, 39]
    rows = build("gru", in_channels=3, num_classes=10, image_size=4, hidden=3)
    torch.testing.assert_close(rows.sequence(x), x.permute(0, 2, 1, 3).reshape(1, 4, 12))


# ------------------------------------------------------------ the default is the old net


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("channels", "size"), [(1, 8), (1, 28), (3, 32)], ids=["digits", "mnist", "cifar"]
)
def test_default_is_the_net_built_without_the_argument(kind: str, channels: int, size: int) -> None:
    shape = {"in_channels": channels, "num_classes": 10, "image_size": size}
    nets = []
    for extra in ({}, {"pixels_per_step": 0}, {"pixels_per_step": size}):
        torch.manual_seed(7)
        nets.append(build(kind, **shape, hidden=9, **extra))
    plain = nets[0]
    x = torch.randn(4, channels, size, size)
    with torch.no_grad():
        out = plain(x)
        # the row-by-row sequence of before: row t, its channels side by side
        torch.testing.assert_close(
            plain.sequence(x), x.permute(0, 2, 1, 3).reshape(4, size, channels * size)
        )
    assert plain.steps == size and plain.features == channels * size
    for other in nets[1:]:
        assert shapes(other) == shapes(plain)
        for key, value in plain.state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key
        with torch.no_grad():
            assert torch.equal(other(x), out)
    # not given, it is not recorded: the identity (checkpoints, ids) of the old nets
    identity = model_identity(plain)
    assert identity is not None and "pixels_per_step" not in identity[1]


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_count_changes_only_in_the_input_width(kind: str) -> None:
    rows = build(kind, **DIGITS, hidden=16)
    for pixels in (1, 2, 4, 16):
        net = build(kind, **DIGITS, hidden=16, pixels_per_step=pixels)
        assert count(net) - count(rows) == GATES[kind] * 16 * (pixels - 8)
        s, r = shapes(net), shapes(rows)
        assert set(s) == set(r)
        assert {k for k in s if s[k] != r[k]} == {"cell.ih.weight"}
        assert s["cell.ih.weight"] == (GATES[kind] * 16, pixels)


def test_the_twins_still_share_names_and_differ_in_the_gate_rows() -> None:
    nets = {kind: build(kind, **DIGITS, hidden=20, pixels_per_step=2) for kind in KINDS}
    names = {kind: list(shapes(net)) for kind, net in nets.items()}
    assert names["rnn"] == names["lstm"] == names["gru"]
    for kind, gates in GATES.items():
        s = shapes(nets[kind])
        assert s["cell.ih.weight"] == (gates * 20, 2) and s["cell.hh.weight"] == (gates * 20, 20)


# ------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pixels", [3, 5, 7, 65, 128])
def test_a_value_that_does_not_divide_the_pixels_is_refused(kind: str, pixels: int) -> None:
    with pytest.raises(SpecError, match="pixels_per_step") as info:
        build(kind, **DIGITS, pixels_per_step=pixels)
    message = str(info.value)
    assert "64 pixels" in message and "1, 2, 4, 8, 16, 32, 64" in message


def test_mnist_lists_its_own_divisors() -> None:
    with pytest.raises(SpecError, match="pixels_per_step") as info:
        build("lstm", **MNIST, pixels_per_step=3)
    assert "1, 2, 4, 7, 8, 14, 16, 28, 49, 56, 98, 112, 196, 392, 784" in str(info.value)


@pytest.mark.parametrize("value", [-1, 1 << 20, 2.0, "2", True])
def test_out_of_range_or_not_an_integer_is_refused_before_building(value: object) -> None:
    with pytest.raises(SpecError, match="pixels_per_step"):
        check_model_args("rnn", {"pixels_per_step": value})
    with pytest.raises(SpecError, match="pixels_per_step"):
        build("rnn", **DIGITS, pixels_per_step=value)


# ------------------------------------------------------------ gradient flow through time


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("pixels", "steps"), [(1, 64), (2, 32), (0, 8)])
def test_gradient_flow_has_one_value_per_step(kind: str, pixels: int, steps: int) -> None:
    torch.manual_seed(0)
    model = build(kind, **DIGITS, hidden=8, pixels_per_step=pixels)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)
    flow = gradient_flow(model, (x, y), batch_size=5)
    assert flow.time_grad_norm is not None and flow.time_grad_norm.shape == (steps,)
    assert np.all(np.isfinite(flow.time_grad_norm)) and np.all(flow.time_grad_norm > 0)
    ratio = flow.through_time_ratio()
    assert ratio is not None and np.isfinite(ratio)
    assert flow.names == ("cell.ih.weight", "cell.hh.weight", "head.weight")


def _unrolled_state_grads(model: nn.Module, x: Tensor, y: Tensor, kind: str, p: int) -> list[float]:
    """‖∂L/∂h_t‖ by hand: PyTorch's own cell (same weights) over ``p`` pixels at a time of
    the flattened one-channel image, every h_t kept, one autograd.grad of the full-data mean
    loss with respect to all of them."""
    cell_type = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind]
    ours = model.cell
    cell = cell_type(p, ours.hidden)
    with torch.no_grad():
        cell.weight_ih.copy_(ours.ih.weight)
        cell.weight_hh.copy_(ours.hh.weight)
        cell.bias_ih.copy_(ours.ih.bias)
        cell.bias_hh.copy_(ours.hh.bias)
    seq = x.reshape(len(x), -1).reshape(len(x), -1, p)  # (N, pixels / p, p)
    h = torch.zeros(len(x), ours.hidden)
    c = torch.zeros_like(h)
    states = []
    for t in range(seq.shape[1]):
        if kind == "lstm":
            h, c = cell(seq[:, t], (h, c))
        else:
            h = cell(seq[:, t], h)
        states.append(h)
    loss = F.cross_entropy(model.head(h), y)
    return [float(g.double().norm()) for g in torch.autograd.grad(loss, states)]


@pytest.mark.parametrize("kind", KINDS)
def test_through_time_matches_autograd_on_a_tiny_net(kind: str) -> None:
    """A 5×5 image, 1 pixel a step: 25 steps (the row-by-row net would have 5)."""
    torch.manual_seed(0)
    model = build(kind, in_channels=1, num_classes=3, image_size=5, hidden=4, pixels_per_step=1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(37, 1, 5, 5, generator=g), torch.randint(0, 3, (37,), generator=g)
    expected = _unrolled_state_grads(model, x, y, kind, 1)
    assert len(expected) == 25
    flow = gradient_flow(model, (x, y), batch_size=10)  # 4 batches, one of 7
    assert flow.time_grad_norm is not None and len(flow.time_grad_norm) == 25
    np.testing.assert_allclose(flow.time_grad_norm, expected, rtol=1e-5)
    k = round(25 * 0.25)  # 6 steps a quarter
    ratio = np.mean(expected[:k]) / np.mean(expected[-k:])
    assert flow.through_time_ratio() == pytest.approx(ratio, rel=1e-5)


def test_through_time_matches_autograd_two_pixels_on_digits() -> None:
    torch.manual_seed(1)
    model = build("rnn", **DIGITS, hidden=6, pixels_per_step=2)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)
    expected = _unrolled_state_grads(model, x, y, "rnn", 2)
    flow = gradient_flow(model, (x, y), batch_size=8)
    assert flow.time_grad_norm is not None and len(flow.time_grad_norm) == 32
    np.testing.assert_allclose(flow.time_grad_norm, expected, rtol=1e-5)


# -------------------------------------------------------------------------- training


def test_a_tiny_rnn_with_two_pixels_a_step_trains(tmp_path: Path) -> None:
    data = DataSpec(train_size=64, test_size=32)
    args: dict[str, int | float | str] = {"hidden": 16, "pixels_per_step": 2}
    spec = TrainSpec(
        model="rnn", data=data, model_args=args, epochs=1, batch_size=16, device="cpu", seed=0
    )
    torch.manual_seed(0)  # the initialization train_model starts from
    initial = build("rnn", **DIGITS, hidden=16, pixels_per_step=2)
    x, y = load_data(data, "train")
    assert x.shape[1:] == (1, 8, 8) and len(y) == 64
    with torch.no_grad():
        before = float(F.cross_entropy(initial.eval()(x), y))
    meta = train_model(spec, tmp_path / "rnn.pt")
    assert np.isfinite(meta["train_loss"]) and np.isfinite(meta["test_loss"])
    model, loaded = load_checkpoint(tmp_path / "rnn.pt")
    assert loaded["model_args"]["pixels_per_step"] == 2  # the checkpoint rebuilds 32 steps
    assert model.steps == 32 and model.cell.ih.in_features == 2
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    assert after < before, (before, after)
    flow = gradient_flow(model, (x, y))
    assert flow.time_grad_norm is not None and flow.time_grad_norm.shape == (32,)
