"""``load_checkpoint`` of a ``landscape train --model-factory`` checkpoint: without the
factory, an error naming it and how to pass it (not "unknown model … choose one of" the zoo);
with ``model_factory=``, the module rebuilt with the stored arguments and its weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import landscape
from landscape.errors import CheckpointError
from landscape.sources.checkpoint import save_checkpoint

NETS = """from torch import nn


def make_net(in_channels, num_classes, image_size, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, width),
                         nn.ReLU(), nn.Linear(width, num_classes))
"""
ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 12}


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.nn.Module]:
    """What ``landscape train --model-factory mynets_ckpt:make_net`` writes: the factory's
    name and arguments, and the weights."""
    (tmp_path / "mynets_ckpt.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynets_ckpt  # type: ignore[import-not-found]

    torch.manual_seed(0)
    model = mynets_ckpt.make_net(**ARGS)
    path = tmp_path / "mine.pt"
    save_checkpoint(path, model, model_name="mynets_ckpt:make_net", model_args=ARGS, metadata={})
    return path, model


def test_without_the_factory_the_error_names_it_and_model_factory(
    trained: tuple[Path, torch.nn.Module],
) -> None:
    path, _ = trained
    with pytest.raises(CheckpointError) as raised:
        landscape.load_checkpoint(path)
    message = str(raised.value)
    assert "--model-factory 'mynets_ckpt:make_net'" in message
    assert "load_checkpoint(path, model_factory='mynets_ckpt:make_net')" in message
    assert "width=12" in message and "choose one of" not in message


@pytest.mark.parametrize("by", ["name", "callable"])
def test_with_model_factory_the_module_and_weights_come_back(
    trained: tuple[Path, torch.nn.Module], by: str
) -> None:
    path, original = trained
    import mynets_ckpt

    factory = "mynets_ckpt:make_net" if by == "name" else mynets_ckpt.make_net
    model, meta = landscape.load_checkpoint(path, model_factory=factory)
    assert not model.training and meta["model_args"]["width"] == 12
    for (name, p), q in zip(
        model.state_dict().items(), original.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)
