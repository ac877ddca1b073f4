"""Data sets as tensors: loaded once, normalized, moved to the device in one piece.

The grid evaluation sweeps the whole data set thousands of times, so a data set here is a pair
of tensors ``(x, y)`` — ``x`` float32 ``(N, C, H, W)`` (``(N, C, L)`` for 1-D signals), ``y``
int64 — not a DataLoader.
Everything is deterministic: the same name, split and size give the same tensors everywhere.

Sources: ``digits`` (bundled with scikit-learn, offline), MNIST-1D (generated locally,
``landscape.mnist1d_data``), the torchvision sets read from a data root, and a user's own
``.pt`` / ``.npz`` file with ``x`` and ``y``.
"""

from __future__ import annotations

import gzip
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from landscape.errors import DatasetNotFoundError, SpecError, UnknownNameError
from landscape.mnist1d_data import LENGTH, NUM_CLASSES, VARIANTS, mnist1d_arrays
from landscape.specs import DataSpec

logger = logging.getLogger(__name__)

SplitName = Literal["train", "test"]
SPLITS = ("train", "test")
USER_SUFFIXES = (".pt", ".npz")
SPLIT_SEED = 0  # fixed: a data set's split and subsets never depend on a training seed
TEST_FRACTION = 0.2  # for digits and user files without their own test split


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set; ``available``: its files are present.

    ``image_size`` is the side of square images, or the length of 1-D signals
    (``spatial_dims`` 1).
    """

    name: str
    description: str
    in_channels: int
    image_size: int
    num_classes: int
    needs_files: bool
    available: bool = True
    spatial_dims: int = 2

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape: ``(C, S, S)`` for images, ``(C, L)`` for signals."""
        return (self.in_channels,) + (self.image_size,) * self.spatial_dims

    def model_shape(self) -> dict[str, int]:
        """The keywords ``landscape.models.build`` takes from the data (``spatial_dims`` only
        for signals, so an image model's recorded arguments stay what they always were)."""
        shape = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
        }
        if self.spatial_dims != 2:
            shape["spatial_dims"] = self.spatial_dims
        return shape


@dataclass(frozen=True)
class _Torchvision:
    description: str
    in_channels: int
    image_size: int
    num_classes: int
    folder: str  # under the data root, as torchvision lays it out
    mean: tuple[float, ...]  # per-channel statistics of the training split
    std: tuple[float, ...]


_TORCHVISION: dict[str, _Torchvision] = {
    "cifar10": _Torchvision(
        "CIFAR-10: 50k/10k 32×32 colour images, 10 classes", 3, 32, 10,
        "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _Torchvision(
        "CIFAR-100: 50k/10k 32×32 colour images, 100 classes", 3, 32, 100,
        "cifar-100-python", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
    "mnist": _Torchvision(
        "MNIST: 60k/10k 28×28 handwritten digits", 1, 28, 10, "MNIST/raw", (0.1307,), (0.3081,),
    ),
    "fashion-mnist": _Torchvision(
        "Fashion-MNIST: 60k/10k 28×28 clothing images, 10 classes", 1, 28, 10,
        "FashionMNIST/raw", (0.2860,), (0.3530,),
    ),
}  # fmt: skip

_DIGITS = DatasetInfo(
    "digits", "scikit-learn's bundled 8×8 handwritten digits (1797 images; 80/20 split)",
    1, 8, 10, needs_files=False,
)  # fmt: skip

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def list_datasets(data_root: str | Path | None = None) -> list[DatasetInfo]:
    """The registered data sets (not user files), with whether their files are present."""
    names = sorted([*VARIANTS, *_TORCHVISION])
    return [_DIGITS] + [dataset_info(name, data_root) for name in names]


def dataset_info(name: str, data_root: str | Path | None = None) -> DatasetInfo:
    """Shape and class count of a registered data set or a user ``.pt``/``.npz`` file."""
    if name == "digits":
        return _DIGITS
    if name in VARIANTS:
        return DatasetInfo(
            name, VARIANTS[name].description, 1, LENGTH, NUM_CLASSES, needs_files=False,
            spatial_dims=1,
        )  # fmt: skip
    if name in _TORCHVISION:
        meta = _TORCHVISION[name]
        available = data_root is not None and _files_present(name, Path(data_root))
        return DatasetInfo(
            name, meta.description, meta.in_channels, meta.image_size, meta.num_classes,
            needs_files=True, available=available,
        )  # fmt: skip
    if _is_user_file(name):
        arrays = _read_user_file(Path(name))
        x = _as_images(arrays["x"], name)
        ys = [arrays[key] for key in arrays if key.startswith("y")]
        num_classes = int(max(int(torch.as_tensor(y).max()) for y in ys)) + 1
        return DatasetInfo(
            name, f"user data from {name}", x.shape[1], x.shape[2], num_classes,
            needs_files=True, available=True,
        )  # fmt: skip
    registered = sorted([*VARIANTS, *_TORCHVISION])
    raise UnknownNameError("data set", name, ["digits", *registered, "<path>.pt", "<path>.npz"])


def load_dataset(
    name: str = "digits",
    split: SplitName = "train",
    *,
    data_root: str | Path | None = None,
    size: int | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of one split, normalized, on ``device``; ``size`` keeps a fixed subset."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, list(SPLITS))
    if size is not None and (not isinstance(size, int) or size < 1):
        raise SpecError(f"size must be a positive integer or None, got {size!r}")
    if name == "digits":
        x, y = _load_digits(split)
    elif name in VARIANTS:
        arrays = mnist1d_arrays(name, data_root)
        x, y = torch.tensor(arrays[f"x_{split}"]), torch.tensor(arrays[f"y_{split}"])
    elif name in _TORCHVISION:
        x, y = _load_torchvision(name, split, data_root, download)
    elif _is_user_file(name):
        x, y = _load_user_file(Path(name), split)
    else:
        dataset_info(name)  # raises the UnknownNameError listing the choices
        raise AssertionError("unreachable")
    if size is not None and size < len(y):
        keep = _subset_indices(len(y), size)
        x, y = x[keep], y[keep]
    logger.info("data set %s/%s: x %s, %d classes", name, split, tuple(x.shape), int(y.max()) + 1)
    return x.to(device), y.to(device)


def load_data(
    spec: DataSpec, split: SplitName, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """``load_dataset`` driven by a ``DataSpec`` (``train_size``/``test_size`` per split)."""
    size = spec.train_size if split == "train" else spec.test_size
    return load_dataset(
        spec.name, split, data_root=spec.data_root, size=size, download=spec.download,
        device=device,
    )  # fmt: skip


# --- subsets and splits -------------------------------------------------------------------


def _subset_indices(n: int, size: int) -> Tensor:
    """The first ``size`` of a fixed permutation, in original order: nested subsets."""
    return subset_blocks(n, size, 1)[0]


def subset_blocks(n: int, size: int, count: int) -> list[Tensor]:
    """``count`` disjoint subsets of ``size`` of a split of ``n``: consecutive blocks of the
    fixed seeded permutation, each in original order; the first is the subset ``size`` keeps."""
    if size < 1 or count < 1 or size * count > n:
        raise SpecError(f"{count} disjoint subsets of {size} need {size * count} samples; "
                        f"the split has {n}")  # fmt: skip
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(n, generator=generator)
    return [order[k * size : (k + 1) * size].sort().values for k in range(count)]


def _split_indices(labels: np.ndarray, split: SplitName) -> np.ndarray:
    """A stratified, seeded 80/20 split, so both splits hold every class in proportion."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    train, test = train_test_split(
        indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=stratify
    )
    return np.sort(train if split == "train" else test)


# --- digits -------------------------------------------------------------------------------


def _load_digits(split: SplitName) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    train = _split_indices(labels, "train")
    # Normalize with the training split's statistics only, so test data stays unseen.
    mean, std = images[train].mean(), images[train].std()
    chosen = _split_indices(labels, split)
    x = torch.from_numpy((images[chosen] - mean) / std).unsqueeze(1)
    return x.float().contiguous(), torch.from_numpy(labels[chosen])


# --- torchvision sets ---------------------------------------------------------------------


def _files_present(name: str, root: Path) -> bool:
    folder = root / _TORCHVISION[name].folder
    if name == "cifar10":
        needed = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    elif name == "cifar100":
        needed = ["train", "test"]
    else:
        needed = [f for pair in _MNIST_FILES.values() for f in pair]
    return all(_find_file(folder / f) is not None for f in needed)


def _find_file(path: Path) -> Path | None:
    """``path`` or its ``.gz`` twin (torchvision keeps the idx files uncompressed)."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_torchvision(
    name: str, split: SplitName, data_root: str | Path | None, download: bool
) -> tuple[Tensor, Tensor]:
    meta = _TORCHVISION[name]
    if data_root is None:
        raise DatasetNotFoundError(
            f"data set {name!r} needs a data root (--data-root DIR) holding {meta.folder}/; "
            "pass --download to fetch it there"
        )
    root = Path(data_root)
    if not _files_present(name, root):
        if download:
            _download(name, root)
        if not _files_present(name, root):
            raise DatasetNotFoundError(
                f"data set {name!r} not found: expected its files in {root / meta.folder} "
                "(torchvision's layout); put them there or pass --download"
            )
    if name.startswith("cifar"):
        images, labels = _read_cifar(name, root / meta.folder, split)
    else:
        images, labels = _read_mnist(root / meta.folder, split)
    x = torch.from_numpy(images).float().div_(255.0)
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous(), torch.from_numpy(labels.astype(np.int64))


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    classes = {
        "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100,
        "mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST,
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            classes[name](str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # no network, or a failed checksum
        raise DatasetNotFoundError(
            f"could not download {name!r} into {root}: {exc}; put the files there by hand"
        ) from exc


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what numpy arrays need, never arbitrary code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_cifar(name: str, folder: Path, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        files, label_key = [split], "fine_labels"
    images, labels = [], []
    for file in files:
        path = folder / file
        try:
            with open(path, "rb") as handle:
                batch = _ArrayUnpickler(handle, encoding="latin1").load()
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
            raise DatasetNotFoundError(f"unreadable CIFAR batch {path}: {exc}") from exc
    return np.concatenate(images), np.concatenate(labels)


def _read_idx(path: Path) -> np.ndarray:
    """The idx format of LeCun's MNIST files: magic, dims (big-endian int32), uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetNotFoundError(f"{path} is truncated: expected {tuple(dims)} bytes")
    return body.reshape(tuple(int(d) for d in dims)).copy()


def _read_mnist(folder: Path, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = _MNIST_FILES[split]
    images = _read_idx(_find_file(folder / image_file) or folder / image_file)
    labels = _read_idx(_find_file(folder / label_file) or folder / label_file)
    return images[:, None, :, :], labels


# --- user files ---------------------------------------------------------------------------


def _is_user_file(name: str) -> bool:
    return name.endswith(USER_SUFFIXES)


def _read_user_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetNotFoundError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays: dict[str, Any] = {key: archive[key] for key in archive.files}
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            arrays = dict(loaded) if isinstance(loaded, dict) else {}
    except Exception as exc:  # any unreadable or unsafe file is the user's to fix
        raise DatasetNotFoundError(f"cannot read data file {path}: {exc}") from exc
    pairs = (("x", "y"), ("x_train", "y_train"))
    if not any(a in arrays and b in arrays for a, b in pairs):
        raise SpecError(
            f"data file {path} must hold 'x' and 'y' (or 'x_train', 'y_train', 'x_test', "
            f"'y_test'); found: {', '.join(sorted(arrays)) or 'nothing usable'}"
        )
    if "x" not in arrays:
        arrays["x"] = arrays["x_train"]
    return arrays


def _as_images(array: Any, source: str) -> Tensor:
    x = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise SpecError(f"x in {source} must be (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    if x.shape[2] != x.shape[3]:
        raise SpecError(f"x in {source} must hold square images, got {tuple(x.shape)}")
    return x.float().contiguous()


def _load_user_file(path: Path, split: SplitName) -> tuple[Tensor, Tensor]:
    """A file with ``x_test``/``y_test`` keeps its own split; otherwise a seeded 80/20 one."""
    arrays = _read_user_file(path)
    if f"x_{split}" in arrays and f"y_{split}" in arrays:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        chosen = None
    else:
        x, y = arrays["x"], arrays["y"]
        chosen = _split_indices(np.asarray(torch.as_tensor(y)).astype(np.int64), split)
    images = _as_images(x, str(path))
    labels = torch.as_tensor(np.asarray(y)).long().reshape(-1)
    if len(labels) != len(images):
        raise SpecError(f"{path}: {len(images)} images but {len(labels)} labels")
    if labels.min() < 0:
        raise SpecError(f"{path}: labels must be class indices >= 0, got {int(labels.min())}")
    if chosen is not None:
        index = torch.from_numpy(chosen)
        images, labels = images[index], labels[index]
    return images, labels
