"""Directions: filter normalization (Li et al. 2018 §4), ignore rules, seeds, interpolation, PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.directions import (
    interpolation_direction,
    make_directions,
    model_parameters,
    normalize_direction,
    pca_directions,
    random_direction,
)
from landscape.errors import UnknownNameError
from landscape.specs import DirectionSpec


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()


def draw(model: nn.Module, **kwargs: object) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return random_direction(model_parameters(model), generator=generator, **kwargs)  # type: ignore[arg-type]


def test_filter_norm_matches_weight_filter_norm() -> None:
    model = conv_net()
    params = model_parameters(model)
    d = draw(model, normalization="filter")
    for name, p in params.items():
        if p.dim() > 1:
            torch.testing.assert_close(
                d[name].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-7
            )


def test_biasbn_zeroes_one_dimensional_params() -> None:
    model = conv_net()
    d = draw(model, ignore="biasbn")
    for name, p in model_parameters(model).items():
        assert bool(d[name].any()) == (p.dim() > 1), name


def test_ignore_none_keeps_and_normalizes_one_dimensional_params() -> None:
    model = conv_net()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)  # non-trivial BN γ and β
        model[1].bias.uniform_(-1.0, 1.0)
        model[4].bias.uniform_(-1.0, 1.0)
    d = draw(model, ignore="none", normalization="filter")
    for name, p in model_parameters(model).items():
        if p.dim() == 1:
            assert bool(d[name].any()), name
            torch.testing.assert_close(d[name].norm(), p.norm(), rtol=1e-5, atol=1e-7)


def test_layer_global_and_none_normalizations() -> None:
    model = conv_net()
    params = model_parameters(model)
    weights = [n for n, p in params.items() if p.dim() > 1]
    layer = draw(model, normalization="layer")
    for name in weights:
        torch.testing.assert_close(layer[name].norm(), params[name].norm(), rtol=1e-5, atol=0)
    whole = draw(model, normalization="global")
    total_d = torch.sqrt(sum(whole[n].pow(2).sum() for n in weights))
    total_w = torch.sqrt(sum(params[n].pow(2).sum() for n in weights))
    torch.testing.assert_close(total_d, total_w, rtol=1e-5, atol=0)
    raw = draw(model, normalization="none")
    generator = torch.Generator().manual_seed(1)
    gauss = torch.randn(params[weights[0]].shape, generator=generator)
    torch.testing.assert_close(raw[weights[0]], gauss)


def _li_normalize_directions_for_weights(
    direction: list[torch.Tensor], weights: list[torch.Tensor], norm: str, ignore: str
) -> None:
    """A copy of Li et al.'s ``net_plotter.normalize_directions_for_weights`` (with its
    ``normalize_direction``), tomgoldstein/loss-landscape, for the ``weight`` rule."""
    for d, w in zip(direction, weights, strict=True):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        elif norm == "weight":
            d.mul_(w)
        else:
            raise AssertionError(f"this copy keeps only norm='weight', not {norm!r}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_normalization_is_li_elementwise_rule(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"conv.weight": (5, 3, 3, 3), "conv.bias": (5,), "fc.weight": (7, 45), "fc.bias": (7,)}
    params = {n: torch.randn(s, generator=generator) * 3 for n, s in shapes.items()}
    raw = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
    ours = normalize_direction(raw, params, normalization="weight", ignore="biasbn")
    li = [raw[n].clone() for n in shapes]
    _li_normalize_directions_for_weights(li, list(params.values()), "weight", "biasbn")
    for name, expected in zip(shapes, li, strict=True):
        torch.testing.assert_close(ours[name], expected, rtol=0, atol=0)
    assert not torch.allclose(ours["fc.weight"], raw["fc.weight"])  # the rule did something


def test_unknown_normalization_is_an_error() -> None:
    model = conv_net()
    with pytest.raises(UnknownNameError, match="normalization"):
        normalize_direction(
            model_parameters(model),
            model_parameters(model),
            normalization="filterwise",  # type: ignore[arg-type]
        )


def test_seed_reproducible_and_distinct_directions() -> None:
    model = conv_net()
    spec = DirectionSpec(seed=3)
    (x1, y1), _ = make_directions(model, spec, 2)
    (x2, y2), _ = make_directions(model, spec, 2)
    (x3,), _ = make_directions(model, DirectionSpec(seed=4), 1)
    for name in x1:
        torch.testing.assert_close(x1[name], x2[name], rtol=0, atol=0)
        torch.testing.assert_close(y1[name], y2[name], rtol=0, atol=0)
    name = "0.weight"
    assert not torch.equal(x1[name], y1[name])
    assert not torch.equal(x1[name], x3[name])
    assert set(x1) == {n for n, _ in model.named_parameters()}  # no BN buffers


def test_interpolation_direction_and_make_directions(tmp_path: Path) -> None:
    from landscape.models import build
    from landscape.sources.checkpoint import save_checkpoint

    args = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    model, target = build("resnet20", **args).eval(), build("resnet20", **args).eval()
    d = interpolation_direction(model_parameters(model), model_parameters(target))
    for name, p in model_parameters(model).items():
        torch.testing.assert_close(p + d[name], model_parameters(target)[name])
    path = tmp_path / "target.pt"
    save_checkpoint(path, target, model_name="resnet20", model_args=args, metadata={})
    spec = DirectionSpec(kind="interpolate", target_checkpoint=str(path))
    (x1,), _ = make_directions(model, spec, 1)
    (x2, y2), info = make_directions(model, spec, 2)
    assert info["target_checkpoint"] == str(path)
    for name in d:
        torch.testing.assert_close(x1[name], d[name], rtol=0, atol=0)
        torch.testing.assert_close(x2[name], d[name], rtol=0, atol=0)
    w = "conv1.weight" if "conv1.weight" in y2 else next(n for n in y2 if y2[n].dim() == 4)
    torch.testing.assert_close(
        y2[w].flatten(1).norm(dim=1), model_parameters(model)[w].flatten(1).norm(dim=1)
    )
    biases = [n for n, p in model_parameters(model).items() if p.dim() == 1]
    assert biases and not any(y2[n].any() for n in biases)


def test_make_directions_pca_from_checkpoints(tmp_path: Path) -> None:
    from landscape.models import build
    from landscape.sources.checkpoint import save_checkpoint

    args = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    model = build("mlp-plain", **args).eval()
    paths = []
    for i in range(4):
        snap = build("mlp-plain", **args)
        paths.append(str(tmp_path / f"e{i}.pt"))
        save_checkpoint(paths[-1], snap, model_name="mlp-plain", model_args=args, metadata={})
    spec = DirectionSpec(kind="pca", trajectory=tuple(paths))
    dirs, info = make_directions(model, spec, 2)
    assert len(dirs) == 2 and len(info["explained_variance_ratio"]) == 2
    assert 0 < info["explained_variance_ratio"][1] <= info["explained_variance_ratio"][0] <= 1
    assert np.array(info["trajectory_coords"]).shape == (4, 2)


def test_pca_matches_independent_numpy() -> None:
    model = conv_net()
    params = model_parameters(model)
    rng = np.random.default_rng(0)
    snapshots = []
    for i in range(6):  # a trajectory with two dominant directions
        snap = {}
        for name, p in params.items():
            a, b = rng.normal(size=p.shape), rng.normal(size=p.shape)
            noise = 0.01 * rng.normal(size=p.shape)
            value = p.numpy() + (5 - i) * a * 0.3 + np.sin(i) * b * 0.1 + noise
            snap[name] = torch.tensor(value, dtype=torch.float32)
        snapshots.append(snap)
    dirs, info = pca_directions(params, snapshots, ndim=2, ignore="biasbn")
    names = [n for n, p in params.items() if p.dim() > 1]
    rows = np.stack(
        [
            np.concatenate([(s[n] - params[n]).double().numpy().ravel() for n in names])
            for s in snapshots
        ]
    )
    centered = rows - rows.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(centered @ centered.T)  # Gram matrix: same spectrum
    order = np.argsort(eigvals)[::-1]
    ratios = eigvals[order] / eigvals.sum()
    np.testing.assert_allclose(info["explained_variance_ratio"], ratios[:2], rtol=1e-6)
    for k in range(2):
        u = centered.T @ eigvecs[:, order[k]]
        u /= np.linalg.norm(u)
        got = np.concatenate([dirs[k][n].double().numpy().ravel() for n in names])
        assert abs(abs(got @ u) - 1) < 1e-4  # same component up to sign
        assert abs(np.linalg.norm(got) - 1) < 1e-4
    assert all(not dirs[0][n].any() for n, p in params.items() if p.dim() == 1)


def test_old_meaning_weight_file_reads_as_global(tmp_path: Path) -> None:
    """A file written before ``weight`` meant Li et al.'s rule (no ``weight_normalization``
    attr) reads as ``global`` with a note; a request for today's ``weight`` never resumes it."""
    import h5py

    from landscape.errors import SurfaceFileError
    from landscape.specs import GridSpec, SurfaceSpec
    from landscape.storage import check_matches, create_surface_file, read_surface, surface_key
    from landscape.storage.grid import grid_coordinates

    grid = GridSpec(x_range=(-1.0, 1.0), n_x=3, y_range=(-1.0, 1.0), n_y=3)
    spec = SurfaceSpec(
        checkpoint="c.pt", grid=grid, directions=DirectionSpec(normalization="weight")
    )
    params = model_parameters(conv_net())
    x, y = grid_coordinates(grid)
    paths = {}
    for name in ("new", "old"):
        paths[name] = create_surface_file(
            tmp_path / f"{name}.h5", spec, x=x, y=y, directions=[params, params],
            provenance={"checkpoint_sha256": "sha", "normalization": "weight"},
        )  # fmt: skip
    with h5py.File(paths["old"], "a") as f:
        del f.attrs["weight_normalization"]  # as every file before the attr was written
    new, old = read_surface(paths["new"]), read_surface(paths["old"])
    assert new.spec.directions.normalization == "weight" and "normalization_note" not in new.attrs
    assert old.spec.directions.normalization == "global"
    assert (
        old.attrs["normalization"] == "global"
        and "global rescale" in old.attrs["normalization_note"]
    )
    with pytest.raises(SurfaceFileError, match=r"directions\.normalization"):
        check_matches(paths["old"], spec, "sha")
    global_spec = SurfaceSpec(
        checkpoint="c.pt", grid=grid, directions=DirectionSpec(normalization="global")
    )
    check_matches(paths["old"], global_spec, "sha")  # its meaning: the global rescale
    assert surface_key(spec, "sha") != surface_key(global_spec, "sha")
