"""``landscape surface --model-factory``: the architecture from the user's own code, a bare
state_dict from a file, through the real command in a subprocess (the factory's module is
found on PYTHONPATH, as a user's own package would be)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape import storage as store
from landscape.data import load_dataset
from landscape.engine.evaluator import reference_evaluate
from landscape.sources.model_source import checkpoint_source
from landscape.sources.modules import FACTORY_HELP, model_key
from landscape.specs import DataSpec, GridSpec, SurfaceSpec

MAIN = "import sys; from landscape.cli import main; sys.exit(main())"
FACTORY_MODULE = "my_cli_factories_for_landscape"
FACTORY_SOURCE = textwrap.dedent(
    """
    from torch import nn

    class TwoLayer(nn.Module):
        def __init__(self, in_features, hidden, num_classes):
            super().__init__()
            self.hidden = nn.Linear(in_features, hidden)
            self.head = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.head(self.hidden(x.flatten(1)).tanh())

    def make_net(*, in_channels, num_classes, image_size, hidden=16):
        return TwoLayer(in_channels * image_size**2, hidden, num_classes)
    """
)


@pytest.fixture
def factory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / f"{FACTORY_MODULE}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _cli(args: list[str], factory_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(factory_dir), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args], capture_output=True, text=True, env=env, timeout=300
    )


def _bare_state_dict(tmp_path: Path, hidden: int) -> Path:
    torch.manual_seed(0)
    from importlib import import_module

    net: nn.Module = import_module(FACTORY_MODULE).make_net(
        in_channels=1, num_classes=10, image_size=8, hidden=hidden
    )
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    return path


def test_surface_of_a_factory_model_equals_the_naive_loop(
    factory_dir: Path, tmp_path: Path
) -> None:
    weights = _bare_state_dict(tmp_path, hidden=12)
    out = tmp_path / "s.h5"
    args = ["surface", "--checkpoint", str(weights), "--out", str(out), "--grid", "3"]
    args += ["--model-factory", f"{FACTORY_MODULE}:make_net", "--model-arg", "hidden=12"]
    args += ["--range", "-0.5", "0.5", "--train-size", "64", "--device", "cpu", "--quiet"]
    done = _cli(args, factory_dir)
    assert done.returncode == 0, done.stderr
    surface = store.read_surface(out)
    assert surface.status == "complete"
    assert surface.attrs["model_source"] == "factory"
    assert surface.attrs["model_factory"] == f"{FACTORY_MODULE}:make_net"
    spec = SurfaceSpec(
        checkpoint=str(weights),
        data=DataSpec(name="digits", train_size=64),
        grid=GridSpec(x_range=(-0.5, 0.5), n_x=3, y_range=(-0.5, 0.5), n_y=3),
    )
    source = checkpoint_source(
        spec, factory=f"{FACTORY_MODULE}:make_net", factory_args={"hidden": 12}
    )
    assert surface.attrs["checkpoint_sha256"] == model_key(source.model)
    data = {"train": load_dataset("digits", "train", size=64)}
    coords = store.flat_coordinates(surface.x, surface.y, np.arange(9))
    expected = reference_evaluate(source.model, store.read_directions(out), coords, data)
    for metric, values in expected.items():
        np.testing.assert_allclose(surface.values[metric].reshape(-1), values, atol=1e-5)
    # the same command again: the file is complete, nothing is recomputed
    again = _cli(args, factory_dir)
    assert again.returncode == 0 and "complete, 9/9 points" in again.stdout


@pytest.mark.parametrize(
    ("factory", "extra", "message"),
    [
        ("no_colon_here", [], "wants 'package.module:callable'"),
        ("no_such_module_for_landscape:f", [], "cannot import module"),
        (f"{FACTORY_MODULE}:missing", [], "has no attribute 'missing'"),
        (f"{FACTORY_MODULE}:make_net", ["--model", "mlp"], "not both"),
        (f"{FACTORY_MODULE}:make_net", ["--model-arg", "hidden=13"], "does not fit the model"),
        (f"{FACTORY_MODULE}:make_net", ["--model-arg", "depth=3"], "rejected its arguments"),
    ],
)
def test_bad_factory_is_one_line_and_exit_2(
    factory_dir: Path, tmp_path: Path, factory: str, extra: list[str], message: str
) -> None:
    weights = _bare_state_dict(tmp_path, hidden=12)
    args = ["surface", "--checkpoint", str(weights), "--out", str(tmp_path / "s.h5")]
    args += ["--model-factory", factory, "--grid", "3", "--device", "cpu", "--quiet", *extra]
    done = _cli(args, factory_dir)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "s.h5").exists()


def test_help_says_the_factory_runs_the_users_own_code(factory_dir: Path) -> None:
    done = _cli(["surface", "--help"], factory_dir)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0 and "--model-factory" in text
    assert " ".join(FACTORY_HELP.split()[:8]) in text
