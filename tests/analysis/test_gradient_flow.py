"""Gradient flow against a hand-computed autograd reference, forward order, through time for
recurrent nets, the HDF5 group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import storage as store
from landscape.analysis.gradient_flow import (
    GROUP_NAME,
    forward_layers,
    from_group,
    gradient_flow,
    group_contents,
)
from landscape.errors import SpecError
from landscape.models import build
from landscape.models.resnet import CifarResNet
from landscape.specs import GridSpec, SurfaceSpec
from tests.models.test_recurrent_steps import _unrolled_state_grads


class _Reversed(nn.Module):
    """A 3-layer MLP whose modules are registered output-first: depth must follow forward."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(6, 3)
        self.mid = nn.Linear(5, 6)
        self.inp = nn.Linear(4, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.mid(h))
        out: Tensor = self.out(h)
        return out


def _data(n: int = 37) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_matches_hand_computed_autograd_reference() -> None:
    model = _Reversed()
    x, y = _data()
    # the reference: one autograd.grad of the full-data mean loss, by hand
    weights = [model.inp.weight, model.mid.weight, model.out.weight]
    h1 = torch.tanh(x @ weights[0].T + model.inp.bias)
    h2 = torch.tanh(h1 @ weights[1].T + model.mid.bias)
    reference_loss = F.cross_entropy(h2 @ weights[2].T + model.out.bias, y)
    grads = torch.autograd.grad(reference_loss, weights)
    expected = [float(g.double().norm()) for g in grads]

    flow = gradient_flow(model, (x, y), batch_size=10)  # 4 batches, one of 7
    assert flow.names == ("inp.weight", "mid.weight", "out.weight")
    np.testing.assert_array_equal(flow.depth, [1, 2, 3])
    np.testing.assert_allclose(flow.grad_norm, expected, rtol=1e-5)
    np.testing.assert_allclose(
        flow.weight_norm, [float(w.detach().double().norm()) for w in weights], rtol=1e-6
    )
    np.testing.assert_allclose(flow.ratio, np.asarray(expected) / flow.weight_norm, rtol=1e-5)
    assert flow.loss == pytest.approx(float(reference_loss.detach()), rel=1e-6)
    assert flow.n_samples == 37
    assert model.inp.weight.grad is None  # the caller's model is untouched


def test_train_mode_leaves_batchnorm_statistics_alone() -> None:
    model = CifarResNet(8, in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 3, (16,))
    flow = gradient_flow(model, (x, y), mode="train")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # stem conv, 2 convs per block × 3 blocks, then the classifier
    assert flow.names[0] == "conv1.weight" and flow.names[-1] == "fc.weight"
    assert len(flow.names) == 8
    assert (flow.grad_norm > 0).all()
    eval_flow = gradient_flow(model, (x, y), mode="eval")
    assert not np.allclose(eval_flow.grad_norm, flow.grad_norm)


def test_forward_layers_of_a_residual_net_with_projections() -> None:
    model = CifarResNet(8, shortcut="projection", in_channels=1, num_classes=3)
    names = forward_layers(model, torch.randn(2, 1, 8, 8))
    assert "layer2.0.projection.0.weight" in names
    assert names.index("layer2.0.conv1.weight") < names.index("layer2.0.projection.0.weight")


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="non-empty"):
        gradient_flow(_Reversed(), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(SpecError, match="no conv or linear"):
        gradient_flow(nn.Sequential(nn.Flatten()), _data())


def test_group_round_trip(tmp_path: Path) -> None:
    spec = SurfaceSpec(checkpoint="c.pt", grid=GridSpec(n_x=3, n_y=3))
    x, y = store.grid_coordinates(spec.grid)
    path = store.create_surface_file(
        tmp_path / "s.h5",
        spec,
        x=x,
        y=y,
        directions=[{"w": torch.ones(2)}, {"w": torch.zeros(2)}],
        provenance={"checkpoint_sha256": "ab" * 32},
    )
    model = _Reversed()
    rnn = build("rnn", in_channels=1, num_classes=3, image_size=4, hidden=3)
    rnn_data = (torch.randn(9, 1, 4, 4), torch.randint(0, 3, (9,)))
    flows = {
        "init": gradient_flow(model, _data()),
        "trained": gradient_flow(model, _data(9)),
        "rnn": gradient_flow(rnn, rnn_data),
    }
    arrays, attrs = group_contents(flows, {"split": "train"})
    assert "init/time_grad_norm" not in arrays and arrays["rnn/time_grad_norm"].shape == (4,)
    store.write_group(path, GROUP_NAME, arrays, attrs)
    group = store.read_group(path, GROUP_NAME)
    assert group is not None
    back = from_group(*group)
    assert set(back) == {"init", "trained", "rnn"}
    for label, flow in flows.items():
        assert back[label].names == flow.names
        np.testing.assert_array_equal(back[label].grad_norm, flow.grad_norm)
        assert back[label].n_samples == flow.n_samples
    assert back["init"].time_grad_norm is None  # a group written before the entry reads so
    np.testing.assert_array_equal(back["rnn"].time_grad_norm, flows["rnn"].time_grad_norm)
    assert group[1]["split"] == "train"
    with pytest.raises(SpecError, match="not a gradient-flow"):
        from_group(group[0], {**group[1], "encoding-type": "hessian-spectrum"})


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_through_time_matches_autograd_on_a_tiny_recurrent_net(kind: str) -> None:
    torch.manual_seed(0)
    model = build(kind, in_channels=1, num_classes=3, image_size=5, hidden=4)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(37, 1, 5, 5, generator=g), torch.randint(0, 3, (37,), generator=g)
    expected = _unrolled_state_grads(model, x, y, kind, 5)  # one row a step
    flow = gradient_flow(model, (x, y), batch_size=10)  # 4 batches, one of 7
    assert flow.time_grad_norm is not None and len(flow.time_grad_norm) == 5
    np.testing.assert_allclose(flow.time_grad_norm, expected, rtol=1e-5)
    # first quarter of 5 steps = 1 step, over the last one
    assert flow.through_time_ratio() == pytest.approx(expected[0] / expected[-1], rel=1e-5)
    assert flow.names == ("cell.ih.weight", "cell.hh.weight", "head.weight")
    as_dict = flow.to_dict()
    assert as_dict["time_grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert as_dict["through_time_ratio"] == pytest.approx(expected[0] / expected[-1], rel=1e-5)
    feedforward = gradient_flow(_Reversed(), _data())
    assert feedforward.time_grad_norm is None and feedforward.through_time_ratio() is None
    assert feedforward.to_dict()["time_grad_norm"] is None
