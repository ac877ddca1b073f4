"""Directions restricted to a parameter subset (``DirectionSpec.params``): the surface against a
naive loop that moves only the chosen parameters, zeros outside the subset, the subset's
Hessian block against the dense Hessian, and the subset in the cache key."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape import storage as store
from landscape.analysis import HessianOperator
from landscape.data import load_data
from landscape.directions import make_directions, select_parameters
from landscape.errors import SpecError, SurfaceFileError
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.storage.keys import spec_differences
from landscape.surface import compute_surface

FAST = EngineOptions(device="cpu", workers=1, compile=False)
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 2, "width": 16}
SUBSET = ("blocks.1.*", "head.weight")
CHOSEN = {"blocks.1.fc1.weight", "blocks.1.fc1.bias", "blocks.1.fc2.weight", "blocks.1.fc2.bias",
          "head.weight"}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    return save_checkpoint(path, model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={})


def _spec(checkpoint: Path, **directions: object) -> SurfaceSpec:
    return SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(train_size=64),
        grid=GridSpec(x_range=(-1.0, 1.0), n_x=3, y_range=(-0.5, 0.5), n_y=3),
        directions=DirectionSpec(**directions),  # type: ignore[arg-type]
    )


def _naive_losses(spec: SurfaceSpec, path: Path) -> np.ndarray:
    """Loss at every grid point by hand: copy θ, add x·δ + y·η to the chosen parameters only
    (δ, η read from the file), loop over the data in batches of 16, mean cross-entropy."""
    model, _ = load_checkpoint(spec.checkpoint)
    model.eval()
    with h5py.File(path, "r") as f:
        x, y = f["x"][()], f["y"][()]
        dx = {n: torch.from_numpy(f["directions/x"][n][()]) for n in f["directions/x"]}
        dy = {n: torch.from_numpy(f["directions/y"][n][()]) for n in f["directions/y"]}
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs, labels = load_data(spec.data, "train")
    out = np.empty((len(y), len(x)))
    for j, yj in enumerate(y):
        for i, xi in enumerate(x):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(theta[name])
                    if name in CHOSEN:
                        p.add_(float(xi) * dx[name] + float(yj) * dy[name])
                total = 0.0
                for k in range(0, len(inputs), 16):
                    logits = model(inputs[k : k + 16])
                    total += float(F.cross_entropy(logits, labels[k : k + 16], reduction="sum"))
            out[j, i] = total / len(inputs)
    return out


def test_subset_surface_equals_the_naive_loop(checkpoint: Path, tmp_path: Path) -> None:
    spec = _spec(checkpoint, params=SUBSET)
    out = compute_surface(spec, tmp_path / "subset.h5", options=FAST)
    surface = store.read_surface(out)
    np.testing.assert_allclose(surface.values["train_loss"], _naive_losses(spec, out), rtol=1e-5)
    assert surface.attrs["params"] == list(SUBSET)
    info = surface.attrs["directions_info"]
    assert info["params_selected"] == len(CHOSEN) and info["params"] == list(SUBSET)
    assert 0 < info["params_numel"] < info["params_total_numel"]
    assert surface.spec.directions.params == SUBSET  # the spec reads back with its subset
    for direction in store.read_directions(out):
        for name, d in direction.items():
            if name not in CHOSEN or d.dim() == 1:  # outside, or a bias that biasbn zeroes
                assert not bool(d.any()), name
            else:
                assert bool(d.all()), name
    # the whole surface is not flat: the subset moves the loss
    assert np.ptp(surface.values["train_loss"]) > 1e-4


def test_subset_direction_is_the_full_one_restricted(checkpoint: Path) -> None:
    """The noise is drawn for every parameter, so with filter normalization a subset's
    direction is the whole net's direction (same seed) on the subset, zero elsewhere."""
    model, _ = load_checkpoint(str(checkpoint))
    full, _ = make_directions(model, DirectionSpec(seed=3), 2)
    part, _ = make_directions(model, DirectionSpec(seed=3, params=SUBSET), 2)
    for whole, sub in zip(full, part, strict=True):
        for name in whole:
            expected = whole[name] if name in CHOSEN else torch.zeros_like(whole[name])
            torch.testing.assert_close(sub[name], expected, rtol=0, atol=0)


def test_global_normalization_scales_the_subset_to_its_own_norm(checkpoint: Path) -> None:
    model, _ = load_checkpoint(str(checkpoint))
    (d,), _ = make_directions(model, DirectionSpec(normalization="global", params=SUBSET), 1)
    moved = [n for n, p in model.named_parameters() if n in CHOSEN and p.dim() > 1]
    d_norm = sum(float(d[n].double().pow(2).sum()) for n in moved) ** 0.5
    w_norm = sum(
        float(p.detach().double().pow(2).sum()) for n, p in model.named_parameters() if n in moved
    )
    assert d_norm == pytest.approx(w_norm**0.5, rel=1e-5)
    assert all(not bool(d[n].any()) for n in d if n not in moved)


def test_trainable_selects_parameters_with_requires_grad() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)  # a frozen backbone, a trainable head
    assert select_parameters(model, ("trainable",)) == {"2.weight", "2.bias"}
    (d,), info = make_directions(model, DirectionSpec(params=("trainable",), ignore="none"), 1)
    assert not bool(d["0.weight"].any()) and not bool(d["0.bias"].any())
    assert bool(d["2.weight"].all()) and bool(d["2.bias"].all())
    assert info["params_selected"] == 2
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(SpecError, match="no parameter with requires_grad"):
        select_parameters(model, ("trainable",))


def test_unmatched_pattern_names_it_and_existing_parameters(checkpoint: Path) -> None:
    model, _ = load_checkpoint(str(checkpoint))
    with pytest.raises(SpecError, match=r"'layer3\.\*' matches no parameter.*stem\.weight.*head"):
        make_directions(model, DirectionSpec(params=("blocks.1.*", "layer3.*")), 2)
    with pytest.raises(SpecError, match="ignore 'biasbn' leaves out"):
        make_directions(model, DirectionSpec(params=("*.bias",)), 2)
    for bad in (("",), ("a,b",), ("head.*", "head.*"), (" head.*",)):
        with pytest.raises(SpecError, match="params"):
            DirectionSpec(params=bad)


def test_subset_enters_the_cache_key(checkpoint: Path) -> None:
    plain, subset = _spec(checkpoint), _spec(checkpoint, params=SUBSET)
    keys = {
        store.surface_key(plain, "sha"),
        store.surface_key(subset, "sha"),
        store.surface_key(_spec(checkpoint, params=("head.weight",)), "sha"),
        store.surface_key(_spec(checkpoint, params=("trainable",)), "sha"),
    }
    assert len(keys) == 4
    # the same patterns in another order choose the same subset: the same surface
    swapped = _spec(checkpoint, params=tuple(reversed(SUBSET)))
    assert store.surface_key(swapped, "sha") == store.surface_key(subset, "sha")
    assert spec_differences(plain, subset) == ["directions.params"]


def test_existing_file_of_another_subset_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    out = compute_surface(
        _spec(checkpoint, params=("head.weight",)), tmp_path / "s.h5", options=FAST
    )
    with pytest.raises(SurfaceFileError, match=r"directions\.params"):
        compute_surface(_spec(checkpoint, params=SUBSET), out, options=FAST)


# --------------------------------------------------------------------------- Hessian


class TinyNet(nn.Module):
    """Linear → tanh → Linear, float64: smooth, so its Hessian has no kink zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def _tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return TinyNet().double(), (torch.randn(23, 4, dtype=torch.float64), torch.randint(0, 3, (23,)))


def _dense(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """The full dense Hessian of the mean loss over the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (data[0],)), data[1])

    return torch.autograd.functional.hessian(mean_loss, theta).numpy()  # type: ignore[no-any-return]


def test_subset_hessian_is_the_block_of_the_dense_hessian() -> None:
    model, data = _tiny()
    full = _dense(model, data)
    op = HessianOperator(model, data, dtype=torch.float64, device="cpu", params={"fc2.weight"})
    start = 4 * 5 + 5  # fc1.weight, fc1.bias come first
    block = full[start : start + 15, start : start + 15]
    assert op.n == 15
    np.testing.assert_allclose(op.dense(), block, rtol=1e-9, atol=1e-12)


def test_hessian_directions_of_a_subset_are_its_block_eigenvectors() -> None:
    model, data = _tiny()
    full = _dense(model, data)
    block = full[25:, 25:]  # fc2.weight and fc2.bias: the last 18 entries
    top = np.linalg.eigh(block)[1][:, -1]
    spec = DirectionSpec(kind="hessian", normalization="none", params=("fc2.*",))
    (d,), info = make_directions(model, spec, 1, data=data)
    assert not bool(d["fc1.weight"].any()) and not bool(d["fc1.bias"].any())
    flat = torch.cat([d["fc2.weight"].reshape(-1), d["fc2.bias"]]).double().numpy()
    assert abs(float(flat @ top)) == pytest.approx(1.0, abs=1e-5)  # unit, parallel
    assert info["eigenvalues"][0] == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-5)


def test_frozen_parameters_enter_a_module_surface_key() -> None:
    """``trainable`` moves what ``requires_grad`` says: two modules with the same weights but
    other frozen parameters are other surfaces; nothing frozen keeps the key it had."""
    from landscape.sources.modules import model_key

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    before = model_key(model)
    model[0].weight.requires_grad_(False)
    frozen_one = model_key(model)
    model[0].bias.requires_grad_(False)
    assert len({before, frozen_one, model_key(model)}) == 3
    for p in model.parameters():
        p.requires_grad_(True)
    assert model_key(model) == before
