"""Under bf16 the classifier's logits come from a float32 head: logits closer than bf16's
resolution no longer tie, so accuracy (and the loss) equal float32's. bf16 autocast runs on
the CPU here (slowly: a tiny net)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from landscape.engine.forward import batch_sums, head_in_fp32
from landscape.engine.point_evaluator import CoreConfig, PointEvaluator, split_batches
from landscape.losses import resolve_loss

CROSS_ENTROPY = resolve_loss("cross_entropy")
STEP = 2.0**-12  # far below bf16's resolution at 1 (2⁻⁷): 1 + STEP is 1 in bf16


def near_tie_net() -> nn.Sequential:
    """An exact body (identity: bf16 keeps the inputs, small integers) and a head whose two
    logits differ by ``STEP·x``: class 1 wins in float32, the two tie in bf16 (argmax: 0).
    The body has no bias: under vmap a float32 bias is added after the bf16 matmul, and the
    test reads the body's output dtype to see that it ran in bf16."""
    body, head = nn.Linear(2, 2, bias=False), nn.Linear(2, 2)
    with torch.no_grad():
        body.weight.copy_(torch.eye(2))
        head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0 + STEP, 0.0]]))
        head.bias.zero_()
    return nn.Sequential(body, nn.ReLU(), head).eval()


def data() -> tuple[Tensor, Tensor]:
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 0.0]])
    return x, torch.ones(4, dtype=torch.long)


def _sums(model: nn.Module, *, bf16: bool) -> tuple[Tensor, Tensor]:
    x, y = data()
    params = dict(model.named_parameters())
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return batch_sums(model, CROSS_ENTROPY, params, x, y, torch.ones(4, dtype=torch.bool))


def test_bf16_logits_tie_and_a_float32_head_gives_float32_accuracy() -> None:
    loss32, correct32 = _sums(near_tie_net(), bf16=False)
    assert int(correct32) == 4
    rounded_loss, rounded = _sums(near_tie_net(), bf16=True)
    assert int(rounded) == 0  # the case is real: bf16 logits tie, argmax reads the rounding
    model = near_tie_net()
    assert head_in_fp32(model, data()[0]) == "2"
    loss, correct = _sums(model, bf16=True)
    assert int(correct) == int(correct32)
    assert loss.dtype == torch.float64  # summed in float64, from float32 logits
    torch.testing.assert_close(loss, loss32, rtol=1e-6, atol=0)
    assert abs(float(rounded_loss - loss32)) > 1e-5 * float(loss32)  # what rounding did


class Reshaped(nn.Module):
    """A head followed by a view and an in-place op: its producer is still found."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.act = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.fc(x).view(-1, 3, 1).squeeze(2)).add_(0.0)


def test_the_head_is_the_producer_of_the_output() -> None:
    model = Reshaped()
    assert head_in_fp32(model, torch.zeros(2, 2)) == "fc"
    assert type(model.fc).__name__ == "Float32Linear" and isinstance(model.fc, nn.Linear)
    assert set(dict(model.named_parameters())) == {"fc.weight", "fc.bias"}  # names unchanged
    again = Reshaped()
    head_in_fp32(again, torch.zeros(2, 2))
    assert type(again.fc) is type(model.fc)  # one class: shared compiled graphs still apply


class NoHead(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 2


def test_no_leaf_module_produces_the_output() -> None:
    assert head_in_fp32(NoHead(), torch.zeros(2, 2)) is None


@pytest.mark.parametrize("points_per_call", [1, 2])
def test_bf16_evaluator_accuracy_equals_fp32(points_per_call: int) -> None:
    """The evaluator itself under bf16 (its autocast, on the CPU here): the body ran in bf16,
    the head in float32, and accuracy and loss are float32's."""
    x, y = data()
    model = near_tie_net()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    dirs = [{n: torch.zeros_like(p) for n, p in params.items()}]
    dirs[0]["0.weight"] = torch.ones(2, 2)  # one moving parameter; evaluated at θ
    dtypes: list[torch.dtype] = []
    model[0].register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))

    def evaluate(precision: str) -> dict[str, np.ndarray]:
        batches = {"train": split_batches(x, y, 4, torch.device("cpu"), False)}
        config = CoreConfig(CROSS_ENTROPY, "cpu", 4, points_per_call, False, False, precision)  # type: ignore[arg-type]
        core = PointEvaluator(model, params, dirs, batches, config)
        assert core.describe()["fp32_head"] == ("2" if precision == "bf16" else None)
        dtypes.clear()
        return core.evaluate(np.zeros((points_per_call, 1)))

    fp32 = evaluate("fp32")
    bf16 = evaluate("bf16")
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the body did compute in bf16
    np.testing.assert_array_equal(bf16["train_acc"], fp32["train_acc"])
    np.testing.assert_allclose(bf16["train_loss"], fp32["train_loss"], rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("compile_mode", [False, "always"])
def test_bf16_on_cuda_gives_float32_accuracy(compile_mode: bool | str) -> None:
    """The production path: bf16 on a GPU, eager and compiled, K = 1 and 2."""
    from landscape.engine.evaluator import GridEvaluator
    from landscape.specs import EngineOptions

    x, y = data()
    model = near_tie_net()
    dirs = [{n: torch.zeros_like(p) for n, p in model.named_parameters()}]
    dirs[0]["0.weight"] = torch.ones(2, 2)
    for k in (1, 2):
        results = {}
        for precision in ("fp32", "bf16"):
            options = EngineOptions(
                device="cuda",
                precision=precision,
                compile=compile_mode,
                points_per_call=k,  # type: ignore[arg-type]
            )
            with GridEvaluator(model, dirs, {"train": (x, y)}, options=options) as ev:
                results[precision] = ev.evaluate(np.zeros((k, 1)))
                info = ev.describe()
        assert info["fp32_head"] == "2" and info["compiled"] is bool(compile_mode)
        np.testing.assert_array_equal(results["bf16"]["train_acc"], results["fp32"]["train_acc"])
        assert results["fp32"]["train_acc"][0] == 1.0
