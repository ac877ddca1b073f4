"""MNIST-1D: generated locally and deterministically, cached once under the data root, listed
by the API, and a 1-D ResNet trained on it gives a surface equal to the naive per-point loop."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from landscape import mnist1d_data
from landscape import storage as store
from landscape.cli import main
from landscape.data import dataset_info, list_datasets, load_dataset
from landscape.engine.evaluator import reference_evaluate
from landscape.mnist1d_data import VARIANTS, Variant, cache_path
from landscape.sources.checkpoint import load_checkpoint

TINY = Variant("MNIST-1D, 300 signals for tests", 300, 100)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A registered 300-sample variant: the real generator at a size that takes a blink."""
    monkeypatch.setitem(VARIANTS, "mnist1d-tiny", TINY)
    mnist1d_data._generated.cache_clear()
    yield "mnist1d-tiny"
    mnist1d_data._generated.cache_clear()


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the generated ``mnist1d-small`` (5,000 samples), shared here."""
    root = tmp_path_factory.mktemp("data")
    load_dataset("mnist1d-small", "train", data_root=root)
    return root


def _fail(*_: Any) -> None:
    raise AssertionError("the generator ran although a cached file was there")


def test_registered_sizes_shapes_and_listing() -> None:
    full, small = VARIANTS["mnist1d"], VARIANTS["mnist1d-small"]
    assert (full.samples - full.test_samples, full.test_samples) == (50_000, 10_000)
    assert (small.samples - small.test_samples, small.test_samples) == (4_000, 1_000)
    info = dataset_info("mnist1d")
    assert (info.in_channels, info.image_size, info.num_classes) == (1, 40, 10)
    assert info.spatial_dims == 1 and info.sample_shape == (1, 40)
    assert not info.needs_files and info.available
    assert info.model_shape() == {
        "in_channels": 1, "num_classes": 10, "image_size": 40, "spatial_dims": 1,
    }  # fmt: skip
    assert dataset_info("digits").model_shape() == {
        "in_channels": 1, "num_classes": 10, "image_size": 8,
    }  # fmt: skip
    assert {"mnist1d", "mnist1d-small"} <= {d.name for d in list_datasets()}


def test_small_variant_splits_and_subsets(small_root: Path) -> None:
    x, y = load_dataset("mnist1d-small", "train", data_root=small_root)
    x_test, y_test = load_dataset("mnist1d-small", "test", data_root=small_root)
    assert x.shape == (4_000, 1, 40) and x_test.shape == (1_000, 1, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(y_test.tolist()) == set(range(10))
    # the package standardizes the whole set: mean 0, standard deviation 1
    both = torch.cat([x, x_test])
    assert abs(float(both.mean())) < 1e-3 and abs(float(both.std()) - 1) < 1e-3
    sub_x, _ = load_dataset("mnist1d-small", "train", data_root=small_root, size=100)
    assert sub_x.shape == (100, 1, 40)
    x[0, 0, 0] = 1e6  # a caller's tensor is its own: the cached arrays stay as they were
    again, _ = load_dataset("mnist1d-small", "train", data_root=small_root)
    assert float(again[0, 0, 0]) != 1e6


def test_generation_is_deterministic_and_leaves_global_rngs_alone(
    tiny: str, tmp_path: Path
) -> None:
    np.random.seed(123)
    random.seed(123)
    expected_numpy, expected_python = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    first = load_dataset(tiny, "train", data_root=tmp_path / "a")
    assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)
    mnist1d_data._generated.cache_clear()
    second = load_dataset(tiny, "train", data_root=tmp_path / "b")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].shape == (200, 1, 40)
    assert load_dataset(tiny, "test", data_root=tmp_path / "a")[0].shape == (100, 1, 40)


def test_cached_file_is_written_once_and_reused(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = load_dataset(tiny, "train", data_root=tmp_path)
    path = cache_path(tmp_path, TINY)
    assert path == tmp_path / "mnist1d" / "mnist1d-300-42.npz" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    monkeypatch.setattr(mnist1d_data, "_make_dataset", _fail)
    mnist1d_data._generated.cache_clear()
    x2, y2 = load_dataset(tiny, "train", data_root=tmp_path)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_stale_or_broken_cache_is_regenerated(tiny: str, tmp_path: Path) -> None:
    x, _ = load_dataset(tiny, "train", data_root=tmp_path)
    path = cache_path(tmp_path, TINY)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["provenance"] = np.array("made by another version")
    arrays["x_train"] = np.zeros_like(arrays["x_train"])
    np.savez(path, **arrays)
    again, _ = load_dataset(tiny, "train", data_root=tmp_path)
    assert torch.equal(again, x)
    path.write_bytes(b"not a zip file")
    assert torch.equal(load_dataset(tiny, "train", data_root=tmp_path)[0], x)
    with np.load(path) as archive:  # rewritten whole
        assert np.array_equal(archive["x_train"], x.numpy())


def test_without_a_data_root_it_is_generated_in_memory(tiny: str) -> None:
    x, y = load_dataset(tiny, "test")
    assert x.shape == (100, 1, 40) and y.shape == (100,)


@pytest.mark.slow
def test_full_size_is_50k_train_10k_test(tmp_path: Path) -> None:
    x, y = load_dataset("mnist1d", "train", data_root=tmp_path)
    x_test, _ = load_dataset("mnist1d", "test", data_root=tmp_path)
    assert x.shape == (50_000, 1, 40) and x_test.shape == (10_000, 1, 40)
    assert torch.bincount(y).min() > 4_500  # every class well represented


def test_api_lists_mnist1d_and_prices_only_models_for_signals(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, api_token=None)
    body: dict[str, Any] = {
        "model": "resnet1d-8",
        "dataset": "mnist1d-small",
        "train": {"epochs": 1},
        "train_size": 200,
        "grid": {"nx": 3, "ny": 3, "xrange": [-1, 1], "yrange": [-1, 1]},
    }
    with TestClient(create_app(settings)) as client:
        listed = {d["name"]: d for d in client.get("/api/datasets").json()}
        accepted = client.post("/api/surfaces", json=body)
        refused = client.post("/api/surfaces", json={**body, "model": "resnet20"})
    entry = listed["mnist1d"]
    assert entry["available"] and "MNIST-1D" in entry["description"]
    assert (entry["in_channels"], entry["image_size"], entry["num_classes"]) == (1, 40, 10)
    assert listed["mnist1d-small"]["available"]
    assert accepted.status_code == 202, accepted.text
    assert refused.status_code == 422
    assert "takes 2-D images" in refused.text and "resnet1d-8" in refused.text


def test_train_and_surface_a_1d_resnet_equal_the_reference(
    tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    data = ["--dataset", tiny, "--data-root", str(root),
            "--train-size", "128", "--test-size", "64", "--device", "cpu"]  # fmt: skip
    checkpoint, out = tmp_path / "r8.pt", tmp_path / "s.h5"
    assert main(["train", "--model", "resnet1d-8", "--out", str(checkpoint), "--epochs", "2",
                 "--batch-size", "32", *data]) == 0  # fmt: skip
    assert main(["surface", "--checkpoint", str(checkpoint), "--grid", "3", "--out", str(out),
                 "--splits", "train", "test", "--workers", "1", "--no-compile", "--quiet",
                 *data]) == 0  # fmt: skip
    assert "complete, 9/9 points" in capsys.readouterr().out
    surface = store.read_surface(out)
    assert surface.attrs["engine"]["bn_folded"] == 7  # every BatchNorm1d into its Conv1d
    model, _ = load_checkpoint(checkpoint)
    assert model.landscape_model["args"]["spatial_dims"] == 1  # type: ignore[index]
    splits = {
        split: load_dataset(tiny, split, data_root=root, size=size)
        for split, size in (("train", 128), ("test", 64))
    }
    coords = store.flat_coordinates(surface.x, surface.y, np.arange(9))
    reference = reference_evaluate(model, store.read_directions(out), coords, splits)
    for metric, values in reference.items():
        np.testing.assert_allclose(surface.values[metric].reshape(-1), values, rtol=1e-5)
