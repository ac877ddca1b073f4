"""Data sets: digits, torchvision sets from a tiny fake copy in the real on-disk format, and
user .pt/.npz files."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.data import dataset_info, list_datasets, load_data, load_dataset
from landscape.errors import DatasetNotFoundError, SpecError, UnknownNameError
from landscape.specs import DataSpec

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def test_digits_shapes_split_and_normalization() -> None:
    from sklearn.datasets import load_digits

    x_train, y_train = load_dataset("digits", "train")
    x_test, y_test = load_dataset("digits", "test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert len(y_train) + len(y_test) == len(load_digits().target)
    assert set(y_test.tolist()) == set(range(10))  # stratified: every class in the test split
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 1e-3
    # Independent check: raw pixels are k/16, k = 0..16, so the normalized values are 17 evenly
    # spaced levels; undoing that affine map, train ∪ test is exactly the raw image set.
    both = torch.cat([x_train, x_test]).reshape(-1, 64).double().numpy()
    levels = np.unique(np.round(both, 5))
    assert len(levels) == 17
    std = (1 / 16) / (levels[1] - levels[0])
    restored = np.round((both * std - levels[0] * std) * 16).astype(int)
    raw = load_digits().images.reshape(-1, 64).astype(int)
    assert sorted(map(tuple, restored)) == sorted(map(tuple, raw))


def test_digits_is_deterministic_and_subsets_nest() -> None:
    a = load_dataset("digits", size=100)
    b = load_dataset("digits", size=100)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (100, 1, 8, 8)
    full_x, _ = load_dataset("digits")
    small_x, _ = load_dataset("digits", size=50)
    rows = {tuple(r.tolist()) for r in a[0].reshape(100, -1)}
    assert all(tuple(r.tolist()) in rows for r in small_x.reshape(50, -1))
    assert all(any(torch.equal(r, f) for f in full_x[:, 0]) for r in small_x[:3, 0])


def test_load_data_uses_the_spec_sizes() -> None:
    spec = DataSpec(name="digits", train_size=64, test_size=32)
    assert load_data(spec, "train")[0].shape[0] == 64
    assert load_data(spec, "test")[0].shape[0] == 32


def test_unknown_names_and_bad_sizes() -> None:
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("imagenet")
    with pytest.raises(UnknownNameError, match="train, test"):
        load_dataset("digits", "valid")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="size"):
        load_dataset("digits", size=0)


def write_fake_cifar10(root: Path, n_per_batch: int = 4) -> dict[str, np.ndarray]:
    """CIFAR-10's python layout: pickled dicts with 'data' (N, 3072 uint8) and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, handle)
        written[name] = data
        written[name + "_labels"] = np.array(labels)
    return written


def test_cifar10_from_a_fake_copy(tmp_path: Path) -> None:
    written = write_fake_cifar10(tmp_path)
    assert dataset_info("cifar10", tmp_path).available
    x, y = load_dataset("cifar10", "train", data_root=tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    # Independent expectation: uint8 → [0, 1] → per-channel (x - mean) / std.
    first = written["data_batch_1"][0].reshape(3, 32, 32) / 255.0
    expected = (first - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[
        :, None, None
    ]
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    x_test, y_test = load_dataset("cifar10", "test", data_root=tmp_path)
    assert x_test.shape == (4, 3, 32, 32)
    assert y_test.tolist() == written["test_batch_labels"].tolist()


def test_cifar_batches_are_not_unpickled_blindly(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path)
    evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Path("/etc")}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil))
    with pytest.raises(DatasetNotFoundError, match="refusing"):
        load_dataset("cifar10", "test", data_root=tmp_path)


def write_idx(path: Path, array: np.ndarray) -> None:
    """LeCun's idx format: 0, 0, 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_family_from_fake_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    x, y = load_dataset(name, "test", data_root=tmp_path)
    assert x.shape == (6, 1, 28, 28)
    assert y.tolist() == labels.tolist()
    info = dataset_info(name, tmp_path)
    mean, std = (0.1307, 0.3081) if name == "mnist" else (0.2860, 0.3530)
    np.testing.assert_allclose(x[2, 0].numpy(), (images[2] / 255.0 - mean) / std, atol=1e-5)
    assert (info.in_channels, info.image_size, info.num_classes) == (1, 28, 10)


def test_missing_data_root_says_where_to_put_the_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_root=tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_dataset("mnist")
    infos = {info.name: info for info in list_datasets(tmp_path)}
    assert infos["digits"].available and not infos["cifar10"].available


def test_user_npz_with_its_own_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x_train, x_test = rng.normal(size=(10, 2, 4, 4)), rng.normal(size=(5, 2, 4, 4))
    path = tmp_path / "mine.npz"
    np.savez(
        path, x_train=x_train, y_train=np.arange(10) % 3, x_test=x_test, y_test=[0, 1, 2, 0, 1]
    )
    x, y = load_dataset(str(path), "test")
    np.testing.assert_allclose(x.numpy(), x_test.astype(np.float32))
    assert y.tolist() == [0, 1, 2, 0, 1]
    info = dataset_info(str(path))
    assert (info.in_channels, info.image_size, info.num_classes) == (2, 4, 3)


def test_user_pt_is_split_deterministically(tmp_path: Path) -> None:
    x = torch.randn(50, 8, 8)  # (N, H, W) gets a channel axis
    y = torch.arange(50) % 5
    path = tmp_path / "mine.pt"
    torch.save({"x": x, "y": y}, path)
    x_train, _ = load_dataset(str(path), "train")
    x_test, y_test = load_dataset(str(path), "test")
    assert x_train.shape == (40, 1, 8, 8) and x_test.shape == (10, 1, 8, 8)
    assert sorted(y_test.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # stratified
    together = torch.cat([x_train, x_test])[:, 0]
    assert sorted(together.sum((1, 2)).tolist()) == pytest.approx(sorted(x.sum((1, 2)).tolist()))


def test_user_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "wrong.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(SpecError, match="'x' and 'y'"):
        load_dataset(str(tmp_path / "wrong.npz"))
    torch.save({"x": torch.zeros(4, 3, 4, 5), "y": torch.zeros(4)}, tmp_path / "rect.pt")
    with pytest.raises(SpecError, match="square"):
        load_dataset(str(tmp_path / "rect.pt"))
