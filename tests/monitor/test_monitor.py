"""landscape.monitor.Monitor inside a plain training loop: λmax against a dense Hessian, the
run file through the sharpness reader, the CLI and the service's view, state left as found,
and budget cuts recorded."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape import load_dataset
from landscape.analysis.sharpness import from_group
from landscape.errors import SpecError, UnknownNameError
from landscape.monitor import Monitor, attach_sharpness, read_run
from landscape.monitor import measure as measure_module
from landscape.monitor.measure import Costs
from landscape.monitor.tensorboard import colormap_image


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    return load_dataset("digits", "train", size=128)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))  # 310


def _dense_lambda_max(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """An independent reference: the whole Hessian by autograd.functional, in float64."""
    model = copy.deepcopy(model).double().eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: Tensor) -> Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[name] = theta[offset : offset + size].reshape(shape)
            offset += size
        return F.cross_entropy(functional_call(model, params, (x.double(),)), y)

    hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    return float(torch.linalg.eigvalsh(hessian)[-1])


def _train(
    monitor: Monitor, model: nn.Module, data: tuple[Tensor, Tensor], steps: int, dense: bool
) -> list[tuple[int, Any, float]]:
    """Full-batch SGD at η = 0.5; ``(step, result, dense λmax or NaN)`` at measured steps."""
    x, y = data
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    for step in range(steps):
        result = monitor.step(model, step, optimizer)
        if result is not None:
            seen.append((step, result, _dense_lambda_max(model, x, y) if dense else np.nan))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return seen


def test_lambda_max_equals_the_dense_hessians_and_the_run_file_reads_back(
    digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    """At every measured step the logged λmax is the dense Hessian's top eigenvalue (1e-4
    relative), and the run file's sharpness group, read by the sharpness reader, says so."""
    model = _net()
    run_file = tmp_path / "runs" / "x.h5"
    monitor = Monitor(model, digits, every=3, measure=("lambda_max",), run_file=run_file)
    seen = _train(monitor, model, digits, steps=10, dense=True)
    assert [step for step, _, _ in seen] == [0, 3, 6, 9]
    for _, result, dense in seen:
        assert result.lambda_max == pytest.approx(dense, rel=1e-4)
        assert result.lambda_max_method == "lanczos" and result.cuts == []
        assert result.two_over_lr == pytest.approx(4.0)
    assert seen[-1][2] > seen[0][2] * 1.05  # it moved: the warm start did not pin it
    with h5py.File(run_file, "r") as f:
        group = f["sharpness"]
        assert group.attrs["encoding-type"] == "landscape-sharpness"
        records = from_group({k: group[k][()] for k in group}, dict(group.attrs))
    assert [r["step"] for r in records] == [0, 3, 6, 9]
    for record, (_, result, _) in zip(records, seen, strict=True):
        assert record["lambda_max"] == result.lambda_max and record["lr"] == 0.5
        assert record["loss"] == pytest.approx(result.loss)
    assert read_run(run_file).sharpness[1]["lambda_max"] == seen[1][1].lambda_max


@pytest.mark.slow  # imports the service (FastAPI: seconds on its own)
def test_sharpness_cli_and_the_services_view_read_the_run_file(
    digits: tuple[Tensor, Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``landscape sharpness --history run.h5`` prints the monitored series; the group copied
    into a surface file is what the service's sharpness route returns."""
    import json

    from api.routes.sharpness import sharpness_public
    from landscape import storage
    from landscape.cli import main
    from landscape.specs import EngineOptions, GridSpec
    from landscape.surface import compute_module_surface

    model = _net()
    run_file = tmp_path / "run.h5"
    monitor = Monitor(model, digits, every=2, measure=("lambda_max",), run_file=run_file)
    seen = _train(monitor, model, digits, steps=5, dense=False)
    assert main(["sharpness", "--history", str(run_file), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in printed] == [0, 2, 4]
    assert [r["lambda_max"] for r in printed] == [r.lambda_max for _, r, _ in seen]
    html = tmp_path / "s.html"
    assert main(["sharpness", "--history", str(run_file), "--html", str(html)]) == 0
    assert html.stat().st_size > 1000

    surface = compute_module_surface(
        model, {"train": digits}, tmp_path / "s.h5", grid=GridSpec(n_x=3, n_y=3),
        options=EngineOptions(workers=1, compile=False),
    )  # fmt: skip
    attach_sharpness(run_file, surface)
    public = sharpness_public(storage.read_surface(surface).groups["sharpness"])
    assert [p.step for p in public.points] == [0, 2, 4]
    assert [p.lambda_max for p in public.points] == [r.lambda_max for _, r, _ in seen]
    assert public.loss == "cross_entropy"


def test_a_run_file_without_lambda_max_is_a_clear_cli_error(
    digits: tuple[Tensor, Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from landscape.cli import main

    model = _net()
    run_file = tmp_path / "trace.h5"
    Monitor(model, digits, every=1, measure=("trace",), run_file=run_file).step(model, 0)
    assert main(["sharpness", "--history", str(run_file)]) != 0
    assert "holds no λmax" in capsys.readouterr().err


def _mixed_state_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(8, 10),
    )  # fmt: skip


def test_a_call_leaves_weights_modes_grads_optimizer_and_rngs_as_it_found_them(
    digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    """Mid-training (BN running stats, momentum buffers, gradients present, one submodule in
    eval mode): everything the user's loop holds is bit-identical after a call, and the
    next random numbers are those it would have drawn without the call."""
    x, y = digits
    model = _mixed_state_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    F.cross_entropy(model(x), y).backward()  # gradients waiting for the next step
    model[4].eval()  # a mixed state: dropout off, the rest training
    monitor = Monitor(model, digits, every=1, measure=("lambda_max", "trace", "curve1d",
                      "surface2d"), run_file=tmp_path / "r.h5", surface_points=3)  # fmt: skip
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    result = monitor.step(model, 0, optimizer)

    assert result is not None and result.lambda_max is not None and result.surface2d is not None
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    state = optimizer.state_dict()
    assert state["param_groups"] == opt_state["param_groups"]
    for key, slot in opt_state["state"].items():
        assert torch.equal(state["state"][key]["momentum_buffer"], slot["momentum_buffer"])
    drawn = (torch.rand(3), np.random.rand(3), random.random())
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    random.setstate(rng[2])
    assert torch.equal(drawn[0], torch.rand(3))
    assert np.array_equal(drawn[1], np.random.rand(3)) and drawn[2] == random.random()


def test_state_is_restored_when_a_measurement_fails(digits: tuple[Tensor, Tensor]) -> None:
    """A model that cannot take the data fails with a clear error, its modes restored."""
    model = nn.Sequential(nn.Linear(5, 3))  # digits are 64 features
    monitor = Monitor(model, digits, every=1)
    with pytest.raises(SpecError, match="does not accept inputs"):
        monitor.step(model, 0)
    assert model.training


def _slow_products(monkeypatch: pytest.MonkeyPatch, product_s: float, forward_s: float) -> None:
    """Pretend the model's Hessian products and forward passes take this long."""
    real = measure_module.probe_costs

    def probe(operator: Any) -> tuple[float, Costs]:
        loss, _ = real(operator)
        return loss, Costs(product_s=product_s, forward_s=forward_s)

    monkeypatch.setattr(measure_module, "probe_costs", probe)


def test_what_exceeds_the_budget_is_cut_and_recorded(
    digits: tuple[Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 1-s products and a 20.5-s budget, λmax gets the ~20 Lanczos steps that fit (its
    tolerance out of their reach: its value a lower bound within its residual), the trace
    fewer probes, and the surface's 49 1-s forward passes are skipped; every cut is in the
    result and the file."""
    from landscape.analysis.sharpness import SharpnessOptions

    _slow_products(monkeypatch, product_s=1.0, forward_s=1.0)
    model = _net()
    run_file = tmp_path / "cut.h5"
    monitor = Monitor(model, digits, every=1, budget_s=20.5, trace_samples=40,
                      measure=("lambda_max", "trace", "surface2d"), run_file=run_file,
                      sharpness=SharpnessOptions(tol=1e-12))  # fmt: skip
    result = monitor.step(model, 0, torch.optim.SGD(model.parameters(), lr=0.1))
    assert result is not None
    cuts = {c["what"]: c for c in result.cuts}
    assert set(cuts) == {"lambda_max", "trace", "surface2d"}
    assert cuts["lambda_max"]["planned"] == monitor.sharpness.product_cap
    assert 2 <= cuts["lambda_max"]["done"] <= 20 and cuts["lambda_max"]["unit"] == "products"
    assert result.lambda_max_method == "lanczos-steps"
    assert result.lambda_max_products == cuts["lambda_max"]["done"]
    dense = _dense_lambda_max(model, *digits)
    assert result.lambda_max is not None and result.lambda_max_residual is not None
    assert result.lambda_max <= dense * (1 + 1e-5)
    assert result.lambda_max >= dense - result.lambda_max_residual * 1.01
    assert cuts["trace"]["planned"] == 40 and 1 <= cuts["trace"]["done"] < 40
    assert result.trace is not None
    assert cuts["surface2d"] == {**cuts["surface2d"], "planned": 49, "done": 0, "unit": "points"}
    assert result.surface2d is None
    run = read_run(run_file)
    assert run.cuts == [{"step": 0, **c} for c in result.cuts]
    assert run.sharpness[0]["method"] == "lanczos-steps"
    assert run.sharpness[0]["residual"] == result.lambda_max_residual
    assert run.traces[0]["samples"] == cuts["trace"]["done"]


def test_lanczos_that_converges_within_the_budget_is_no_cut(
    digits: tuple[Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 252-product cap does not fit 100 1-s products, but Lanczos converges (to the
    tracker's 1e-4) long before: the dense λmax, no cut recorded."""
    _slow_products(monkeypatch, product_s=1.0, forward_s=1.0)
    model = _net()
    monitor = Monitor(model, digits, every=1, budget_s=100.5, measure=("lambda_max",))
    result = monitor.step(model, 0)
    assert result is not None and result.cuts == []
    assert result.lambda_max_method == "lanczos-steps" and result.lambda_max_products < 100
    assert result.lambda_max_residual is not None
    assert result.lambda_max_residual <= 1e-4 * result.lambda_max
    assert result.lambda_max == pytest.approx(_dense_lambda_max(model, *digits), rel=1e-4)


def test_a_budget_spent_before_measuring_cuts_everything_but_the_loss(
    digits: tuple[Tensor, Tensor],
) -> None:
    model = _net()
    monitor = Monitor(model, digits, every=1, budget_s=1e-9,
                      measure=("lambda_max", "trace", "curve1d", "surface2d"))  # fmt: skip
    result = monitor.step(model, 0)
    assert result is not None and np.isfinite(result.loss)
    assert (result.lambda_max, result.trace, result.curve1d, result.surface2d) == (None,) * 4
    assert [c["what"] for c in result.cuts] == ["lambda_max", "trace", "curve1d", "surface2d"]
    assert all(c["done"] == 0 for c in result.cuts)


def test_curve_and_surface_are_the_loss_along_filter_normalized_directions(
    digits: tuple[Tensor, Tensor],
) -> None:
    """The centre of the curve and of the surface is the loss at θ; the curve is the loss at
    θ + x·d for the monitor's seeded filter-normalized direction d, computed by hand."""
    from landscape.directions import make_directions
    from landscape.specs import DirectionSpec

    model = _net()
    x, y = digits
    monitor = Monitor(model, digits, every=1, measure=("curve1d", "surface2d"), seed=3)
    result = monitor.step(model, 0)
    assert result is not None and result.curve1d is not None and result.surface2d is not None
    coords, curve = result.curve1d
    assert coords.shape == (11,) and coords[0] == -1 and coords[-1] == 1
    assert curve[5] == pytest.approx(result.loss, rel=1e-5)
    assert result.surface2d[2].shape == (7, 7)
    assert result.surface2d[2][3, 3] == pytest.approx(result.loss, rel=1e-5)
    (direction,), _ = make_directions(model, DirectionSpec(seed=3), 1)
    params = {k: p.detach() + 0.8 * direction[k] for k, p in model.named_parameters()}
    expected = F.cross_entropy(functional_call(model, params, (x,)), y)
    assert curve[9] == pytest.approx(float(expected), rel=1e-5)


def test_steps_between_every_are_skipped_and_bad_settings_are_clear_errors(
    digits: tuple[Tensor, Tensor],
) -> None:
    model = _net()
    monitor = Monitor(model, digits, every=5, measure=("lambda_max",))
    assert monitor.step(model, 3) is None
    assert monitor.step(None, 5) is not None  # the model given to the monitor
    with pytest.raises(UnknownNameError):
        Monitor(model, digits, measure=("hessian",))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="budget_s"):
        Monitor(model, digits, budget_s=0)
    with pytest.raises(SpecError, match="needs data"):
        Monitor(model)
    with pytest.raises(SpecError, match="param_groups"):
        monitor.step(model, 10, optimizer=object())


def test_a_dataset_is_taken_as_a_fixed_seeded_subset(digits: tuple[Tensor, Tensor]) -> None:
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(*digits)
    first = Monitor(None, dataset, max_samples=50, seed=1).data
    again = Monitor(None, dataset, max_samples=50, seed=1).data
    other = Monitor(None, dataset, max_samples=50, seed=2).data
    assert first[0].shape == (50, 1, 8, 8) and torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0])


def test_a_model_whose_output_is_not_logits_is_measured_through_forward(
    digits: tuple[Tensor, Tensor],
) -> None:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"logits": self.net(x)}

    wrapped = Wrapped()
    plain = Monitor(wrapped.net, digits, every=1, measure=("lambda_max", "curve1d"))
    through = Monitor(wrapped, digits, every=1, measure=("lambda_max", "curve1d"),
                      forward=lambda m, x: m(x)["logits"])  # fmt: skip
    a, b = plain.step(wrapped.net, 0), through.step(wrapped, 0)
    assert a is not None and b is not None and b.lambda_max == pytest.approx(a.lambda_max)
    assert a.curve1d is not None and b.curve1d is not None
    assert np.allclose(a.curve1d[1], b.curve1d[1], rtol=1e-6)


def test_the_numpy_colormap_runs_dark_to_bright() -> None:
    """The image used without matplotlib: low loss dark, high loss bright, y upwards."""
    values = np.array([[0.0, 1.0], [2.0, 3.0]])  # rows are y
    image = colormap_image(values)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    brightness = image.astype(float).sum(axis=2)
    assert brightness[-1, 0] < brightness[-1, -1] < brightness[0, 0] < brightness[0, -1]


def _operator(digits: tuple[Tensor, Tensor]) -> Any:
    from landscape.analysis.hessian import HessianOperator

    return HessianOperator(_net().eval(), digits, device="cpu")


def test_unhurried_lanczos_and_trace_are_the_projects_own(digits: tuple[Tensor, Tensor]) -> None:
    """Without a deadline, the budgeted Lanczos gives ``ritz_values``' top pair and the
    budgeted trace ``hutchinson_trace``'s estimate, probe for probe."""
    from landscape.analysis.hessian import hutchinson_trace
    from landscape.analysis.spectral_density import ritz_values
    from landscape.monitor.measure import Budget, lanczos_until, trace

    operator = _operator(digits)
    v0 = np.random.default_rng(5).standard_normal(operator.n)
    top, residual, steps, _ = lanczos_until(operator.matvec, v0, 15, Budget(None))
    theta, residuals = ritz_values(operator.matvec, v0, 15)
    assert steps == 15
    assert top == pytest.approx(theta[-1], rel=1e-10)
    assert residual == pytest.approx(residuals[-1], rel=1e-6, abs=1e-12)
    costs = Costs(product_s=0.0, forward_s=0.0)
    found = trace(operator, 6, 3, costs, Budget(None))
    assert found is not None and found["samples"] == 6
    value, stderr = hutchinson_trace(operator, 6, 3)
    assert found["trace"] == pytest.approx(value) and found["stderr"] == pytest.approx(stderr)


def test_products_slower_than_predicted_stop_at_the_deadline(
    digits: tuple[Tensor, Tensor],
) -> None:
    """Each product advances a clock by 1 s while 0.1 s was predicted: Lanczos and the trace
    stop when the 5.5-s budget is spent, and the trace's cut says why."""
    from landscape.monitor.measure import Budget, lanczos_until, trace

    operator = _operator(digits)
    now, product = [0.0], operator.matvec

    def slow(v: np.ndarray) -> np.ndarray:
        now[0] += 1.0
        out: np.ndarray = product(v)
        return out

    budget = Budget(5.5, clock=lambda: now[0])
    _, _, steps, converged = lanczos_until(slow, np.ones(operator.n), 50, budget)
    assert steps == 6 and not converged  # each step starts with time left: 0.5 s the sixth
    operator.matvec = slow  # type: ignore[method-assign]
    budget = Budget(5.5, clock=lambda: now[0])
    found = trace(operator, 20, 0, Costs(product_s=0.1, forward_s=0.0), budget)
    assert found is not None and found["samples"] == 6
    assert budget.cuts[0]["done"] == 6 and "ran out after 6" in budget.cuts[0]["reason"]


@pytest.mark.gpu
def test_on_cuda_the_numbers_are_the_cpus_and_the_cuda_rng_is_left_alone(
    digits: tuple[Tensor, Tensor],
) -> None:
    """A model on the GPU is measured there (strict fp32 products, the engine in-process):
    λmax, trace and curve as on the CPU, and the CUDA generator's state as before."""
    measure = ("lambda_max", "trace", "curve1d")
    on_cpu = _net()
    on_gpu = copy.deepcopy(on_cpu).cuda()
    cpu = Monitor(on_cpu, digits, every=1, measure=measure).step(on_cpu, 0)
    state = torch.cuda.get_rng_state()
    gpu = Monitor(on_gpu, digits, every=1, measure=measure).step(on_gpu, 0)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert cpu is not None and gpu is not None
    assert gpu.lambda_max == pytest.approx(cpu.lambda_max, rel=1e-4)
    assert gpu.trace == pytest.approx(cpu.trace, rel=1e-4)
    assert cpu.curve1d is not None and gpu.curve1d is not None
    assert np.allclose(gpu.curve1d[1], cpu.curve1d[1], rtol=1e-4)
    assert next(on_gpu.parameters()).is_cuda and on_gpu.training
