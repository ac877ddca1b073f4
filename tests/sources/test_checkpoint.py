"""Checkpoints: round trips, never unpickling, bare state_dicts, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape.errors import CheckpointError
from landscape.models import build
from landscape.sources.checkpoint import FORMAT, file_digest, load_checkpoint, save_checkpoint

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def trained_like(name: str = "resnet20") -> nn.Module:
    """A model whose BN buffers are not the defaults, so buffers are checked too."""
    model = build(name, **ARGS)
    model.train()
    model(torch.randn(16, 1, 8, 8) * 3 + 1)
    return model


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_roundtrip_rebuilds_the_model(tmp_path: Path, suffix: str) -> None:
    model = trained_like()
    path = save_checkpoint(
        tmp_path / f"m{suffix}", model, model_name="resnet20", model_args=ARGS,
        metadata={"test_acc": 0.5, "history": [{"epoch": 1}]},
    )  # fmt: skip
    loaded, metadata = load_checkpoint(path)
    assert not loaded.training
    assert_same_state(model, loaded)
    assert metadata["test_acc"] == 0.5 and metadata["history"] == [{"epoch": 1}]
    assert metadata["model"] == "resnet20" and metadata["model_args"] == ARGS
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_file_is_plain_and_loads_with_weights_only(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", trained_like(), model_name="resnet20", model_args=ARGS, metadata={}
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["model"] == "resnet20"
    assert set(raw) == {"format", "model", "model_args", "state_dict", "metadata"}
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"landscape" * 1000)
    assert file_digest(path) == hashlib.sha256(b"landscape" * 1000).hexdigest()


@pytest.mark.parametrize("wrapped", [False, True])
def test_bare_state_dict_needs_the_model_name(tmp_path: Path, wrapped: bool) -> None:
    model = trained_like("resnet20-noshort")
    path = tmp_path / "bare.pt"
    state = model.state_dict()
    torch.save({"state_dict": state, "epoch": 3} if wrapped else state, path)
    with pytest.raises(CheckpointError, match=r"bare state_dict.*resnet20-noshort"):
        load_checkpoint(path)
    loaded, metadata = load_checkpoint(path, model_name="resnet20-noshort", model_args=ARGS)
    assert_same_state(model, loaded)
    assert metadata["model"] == "resnet20-noshort"


def test_bare_safetensors_and_dataparallel_prefix(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = trained_like()
    path = tmp_path / "bare.safetensors"
    save_file({f"module.{k}": v for k, v in model.state_dict().items()}, str(path))
    loaded, _ = load_checkpoint(path, model_name="resnet20", model_args=ARGS)
    assert_same_state(model, loaded)


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_never_unpickles_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_checkpoint(path, model_name="resnet20")
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_checkpoint(legacy, model_name="resnet20")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_and_missing_files(tmp_path: Path, suffix: str) -> None:
    good = save_checkpoint(
        tmp_path / f"m{suffix}", trained_like(), model_name="resnet20", model_args=ARGS,
        metadata={},
    )  # fmt: skip
    truncated = tmp_path / f"t{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"t{suffix}"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / f"none{suffix}")


def test_wrong_class_count_is_explained(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.pt", trained_like(), model_name="resnet20", model_args=ARGS, metadata={}
    )
    with pytest.raises(CheckpointError, match="10 classes, the model 100"):
        load_checkpoint(path, model_args={"num_classes": 100})
    torch.save(trained_like().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="10 classes, the model 3"):
        load_checkpoint(
            tmp_path / "bare.pt", model_name="resnet20", model_args={**ARGS, "num_classes": 3}
        )


def test_state_dict_of_another_model(tmp_path: Path) -> None:
    torch.save(build("mlp-plain", **ARGS).state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(CheckpointError, match=r"does not fit model .resnet20.*missing"):
        load_checkpoint(tmp_path / "mlp.pt", model_name="resnet20", model_args=ARGS)
    path = save_checkpoint(
        tmp_path / "r.pt", trained_like(), model_name="resnet20", model_args=ARGS, metadata={}
    )
    with pytest.raises(CheckpointError, match="holds model 'resnet20', not the requested"):
        load_checkpoint(path, model_name="resnet56")
    with pytest.raises(CheckpointError, match="unknown model"):
        load_checkpoint(tmp_path / "mlp.pt", model_name="nope")
