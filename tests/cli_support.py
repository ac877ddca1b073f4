"""What CLI tests share: the one-line check of a user error, and a tiny checkpoint to run on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint

MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 8}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error: …`` line the command printed (no traceback), for matching."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_mlp_checkpoint(folder: Path) -> Path:
    """A one-layer ``mlp-plain`` for digits (seed 0) saved as a landscape checkpoint."""
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS)
    path = folder / "mlp.pt"
    return save_checkpoint(path, model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={})
