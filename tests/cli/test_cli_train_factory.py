"""``landscape train --model-factory pkg.mod:fn`` trains your own architecture with the
project's recipe, from the folder holding the module, and says how to rebuild it: the
checkpoint records the factory's name and arguments and holds weights only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

LANDSCAPE = Path(sys.executable).with_name("landscape")
NETS = """from torch import nn


def make_net(in_channels, num_classes, image_size, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, width),
                         nn.ReLU(), nn.Linear(width, num_classes))
"""


def _landscape(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    command = str(LANDSCAPE) if LANDSCAPE.exists() else shutil.which("landscape") or "landscape"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([command, *argv], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_train_your_own_architecture_then_its_surface(tmp_path: Path) -> None:
    (tmp_path / "mynets.py").write_text(NETS)
    recipe = ["--epochs", "1", "--train-size", "60", "--out", "mine.pt"]
    done = _landscape(tmp_path, "train", "--model-factory", "mynets:make_net", "--model-arg",
                      "width=12", *recipe)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "holds weights only" in done.stdout
    assert "--model-factory mynets:make_net --model-args '{\"width\": 12}'" in done.stdout
    content = torch.load(tmp_path / "mine.pt", weights_only=True)
    assert content["model"] == "mynets:make_net" and content["model_args"]["width"] == 12
    surface = _landscape(tmp_path, "surface", "--checkpoint", "mine.pt", "--model-factory",
                         "mynets:make_net", "--model-args", '{"width": 12}', "--grid", "2",
                         "--train-size", "60", "--out", "mine.h5", "--quiet")  # fmt: skip
    assert surface.returncode == 0, surface.stderr


def test_train_wants_a_model_or_a_factory(tmp_path: Path) -> None:
    both = _landscape(tmp_path, "train", "--model", "mlp-plain", "--model-factory", "m:f",
                      "--out", "x.pt")  # fmt: skip
    assert both.returncode == 2 and both.stderr.strip().startswith("error: give one of --model")
    assert "Traceback" not in both.stderr
