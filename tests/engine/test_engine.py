"""The engine equals the naive per-point loop (copy weights in, DataLoader) to fp32 rounding,
whatever path computes it: folded BN, vmap over points, worker processes, compile, CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from landscape.directions import model_parameters, random_direction
from landscape.engine.bn_fold import DenseConv2d, densify_small_convs, fold_batchnorm
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.plan import compile_after_measuring, compile_pays
from landscape.errors import SpecError
from landscape.specs import EngineOptions

RTOL = 1e-5
EAGER = EngineOptions(workers=1, compile=False)


class ConvBNNet(nn.Module):
    """conv-BN-ReLU with a residual add and a conv with bias: the cases BN folding meets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(x.mean(dim=(2, 3)))


def noshort_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def mlp_bn() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )


def zoo(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from landscape.models import build

        return build(name, in_channels=1, num_classes=10, image_size=8)

    return make


def randomize_bn(model: nn.Module) -> nn.Module:
    """Fresh BN layers are the identity; random statistics make folding do real work."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def setup(
    make: Callable[[], nn.Module], *, ndim: int = 2, n: int = 96, ignore: str = "biasbn"
) -> tuple[nn.Module, list[dict[str, torch.Tensor]], dict[str, tuple[torch.Tensor, ...]]]:
    model = randomize_bn(make())
    generator = torch.Generator().manual_seed(0)
    params = model_parameters(model)
    dirs = [
        random_direction(params, ignore=ignore, generator=generator)  # type: ignore[arg-type]
        for _ in range(ndim)
    ]
    x = torch.randn(n, 1, 8, 8)
    y = torch.randint(0, 10, (n,))
    data = {"train": (x, y), "test": (x[: n // 3], y[: n // 3])}
    return model, dirs, data


def assert_same(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], n: int) -> None:
    assert set(got) == set(ref)
    for key in ref:
        assert got[key].dtype == np.float64 and got[key].shape == ref[key].shape
        if key.endswith("_loss"):
            np.testing.assert_allclose(got[key], ref[key], rtol=RTOL, err_msg=key)
        else:  # a sample on a decision boundary may flip under fp32 reordering: ≤ 1 sample
            np.testing.assert_allclose(got[key], ref[key], atol=1.01 / n, rtol=0, err_msg=key)


ARCHS = {
    "conv-bn": ConvBNNet,
    "noshort": noshort_net,
    "mlp-bn": mlp_bn,
    "resnet20": zoo("resnet20"),
    "resnet20-noshort": zoo("resnet20-noshort"),
    "mlp-residual": zoo("mlp-residual"),
    "densenet-bc-40": zoo("densenet-bc-40"),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_matches_reference(arch: str) -> None:
    model, dirs, data = setup(ARCHS[arch], n=48 if arch == "densenet-bc-40" else 96)
    coords = np.random.default_rng(1).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    with GridEvaluator(model, dirs, data, options=EAGER) as ev:
        got = ev.evaluate(coords)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            assert ev.describe()["bn_folded"] > 0
    assert_same(got, ref, len(data["test"][0]))


def test_vmap_over_points_matches_per_point() -> None:
    model, dirs, data = setup(ConvBNNet)
    coords = np.random.default_rng(2).uniform(-1, 1, size=(7, 2))  # 7 = 4 + 3: a padded group
    with GridEvaluator(model, dirs, data, options=EAGER) as ev:
        one = ev.evaluate(coords)
    options = EngineOptions(workers=1, compile=False, points_per_call=4)
    with GridEvaluator(model, dirs, data, options=options) as ev:
        assert ev.describe()["method"] == "vmap"
        batched = ev.evaluate(coords)
    assert_same(batched, one, len(data["test"][0]))


def test_perturbed_bn_is_not_folded_and_still_exact() -> None:
    model, dirs, data = setup(ConvBNNet, ignore="none")
    coords = np.random.default_rng(3).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    for points in (1, 3):
        options = EngineOptions(workers=1, compile=False, points_per_call=points)
        with GridEvaluator(model, dirs, data, options=options) as ev:
            assert ev.describe()["bn_folded"] == 0
            assert_same(ev.evaluate(coords), ref, len(data["test"][0]))


def test_folded_module_equals_unfolded_forward() -> None:
    model, dirs, _ = setup(zoo("resnet20"))
    params = model_parameters(model)
    folded = fold_batchnorm(model, params, dirs)
    assert folded is not None and folded.n_folded > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.module.modules())
    x = torch.randn(16, 1, 8, 8)
    a, b = 0.3, -0.7
    moved = {n: params[n] + a * dirs[0][n] + b * dirs[1][n] for n in params}
    fmoved = {
        n: folded.params[n] + a * folded.directions[0][n] + b * folded.directions[1][n]
        for n in folded.params
    }
    with torch.no_grad():
        want = torch.func.functional_call(model, moved, (x,))
        got = torch.func.functional_call(folded.module, fmoved, (x,))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_one_dimensional_grid_and_mse_loss() -> None:
    model, dirs, data = setup(noshort_net, ndim=1)
    coords = np.linspace(-1, 1, 4)[:, None]
    ref = reference_evaluate(model, dirs, coords, data, loss="mse")
    with GridEvaluator(model, dirs, data, loss="mse", options=EAGER) as ev:
        assert_same(ev.evaluate(coords), ref, len(data["test"][0]))
        assert_same(ev.evaluate(coords[:, 0]), ref, len(data["test"][0]))  # (K,) accepted in 1D
        with pytest.raises(SpecError):
            ev.evaluate(np.zeros((2, 2)))


def test_worker_processes_give_the_same_values() -> None:
    model, dirs, data = setup(ConvBNNet)
    chunks = [np.random.default_rng(i).uniform(-1, 1, size=(k, 2)) for i, k in enumerate((5, 1, 4))]
    with GridEvaluator(model, dirs, data, options=EAGER) as ev:
        single = {i: ev.evaluate(c) for i, c in enumerate(chunks)}
    options = EngineOptions(workers=2, compile=False)
    with GridEvaluator(model, dirs, data, options=options) as ev:
        assert ev.describe()["workers"] == 2
        multi = dict(ev.imap(chunks))
    assert sorted(multi) == [0, 1, 2]
    for i in single:
        for key in single[i]:
            np.testing.assert_allclose(multi[i][key], single[i][key], rtol=1e-6)


def test_cancel_kills_workers_promptly() -> None:
    model, dirs, data = setup(ConvBNNet, n=600)
    options = EngineOptions(workers=2, compile=False, batch_size=8)
    ev = GridEvaluator(model, dirs, data, options=options)
    pids = ev.worker_pids()
    assert len(pids) == 2
    chunks = (np.zeros((50, 2)) for _ in range(100))
    for _ in ev.imap(chunks):
        break  # the caller stops iterating ...
    start = time.monotonic()
    ev.close()  # ... and closes: in-flight work is killed, not awaited
    assert time.monotonic() - start < 5
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError):
        ev.evaluate(np.zeros((1, 2)))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_compiled_path_matches_reference() -> None:
    model, dirs, data = setup(zoo("resnet20"))
    coords = np.random.default_rng(4).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    # a large grid: the first points are timed eagerly, then compiling pays and is done
    options = EngineOptions(workers=1)
    with GridEvaluator(model, dirs, data, options=options, n_points=10**6) as ev:
        assert "compile" not in ev.describe()["method"]
        first = ev.evaluate(coords)
        got = ev.evaluate(coords)
        info = ev.describe()
    assert not info["compile_errors"] and info["method"].endswith("compile")
    assert info["timings"]["compile_s"] > 0 and "measured eager" in info["compile_reason"]
    assert_same(first, ref, len(data["test"][0]))
    assert_same(got, ref, len(data["test"][0]))


@pytest.mark.gpu
def test_cuda_path_matches_cpu_reference() -> None:
    model, dirs, data = setup(zoo("resnet20"))
    coords = np.random.default_rng(5).uniform(-1, 1, size=(9, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    for compile_ in (False, True):
        options = EngineOptions(device="cuda", precision="fp32", compile=compile_)
        with GridEvaluator(model, dirs, data, options=options) as ev:
            info = ev.describe()
            assert info["device"].startswith("cuda") and info["points_per_call"] >= 1
            got = ev.evaluate(coords)
        # cuDNN picks its own algorithms: fp32 but summed in another order
        for key in ref:
            tol = {"rtol": 1e-4} if key.endswith("_loss") else {"atol": 2.01 / 32, "rtol": 0}
            np.testing.assert_allclose(got[key], ref[key], **tol, err_msg=key)


def tiny_map_net() -> nn.Module:
    """Convs down to 2×2 and 1×1 maps, with and without bias, BN and stride: densified."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),  # 8×8 → 4×4: stays a conv
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),  # 4×4 → 2×2: stays a conv
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False),  # 2×2 → 2×2: dense
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1),  # 2×2 → 1×1: dense
        nn.Flatten(),
        nn.Linear(5, 10),
    )


@pytest.mark.parametrize("make", [tiny_map_net, zoo("resnet20"), zoo("resnet20-noshort")])
def test_tiny_convs_become_dense_and_stay_exact(make: Callable[[], nn.Module]) -> None:
    model, dirs, data = setup(make)
    coords = np.random.default_rng(6).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    with GridEvaluator(model, dirs, data, options=EAGER) as ev:
        assert ev.describe()["dense_convs"] >= 2
        got = ev.evaluate(coords)
    assert_same(got, ref, len(data["test"][0]))


def test_densified_module_equals_conv_forward() -> None:
    model = tiny_map_net().eval()
    gm = torch.fx.symbolic_trace(model)
    params = {n: p.detach().clone() for n, p in gm.named_parameters()}
    x = torch.randn(4, 1, 8, 8)
    assert densify_small_convs(gm, params, [], x) == 2
    assert sum(isinstance(m, DenseConv2d) for m in gm.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(
            torch.func.functional_call(gm, params, (x,)), model(x), rtol=1e-5, atol=1e-6
        )


def test_compile_cost_model_weighs_grid_size() -> None:
    model, _, data = setup(zoo("resnet20"), n=1200)
    cpu = torch.device("cpu")
    assert not compile_pays(model, data, cpu, n_points=5 * 5, workers=2)
    assert compile_pays(model, data, cpu, n_points=10**6, workers=2)
    tiny, _, tiny_data = setup(noshort_net)
    assert not compile_pays(tiny, tiny_data, cpu, n_points=51 * 51)  # a tiny net: never
    # the final word is the measured eager time of the first points, on the machine itself
    assert compile_after_measuring(0.2, 220)[0]  # a slow machine: 11 s saved, compile
    assert not compile_after_measuring(0.05, 220)[0]  # a fast one: 2.8 s saved, stay eager
