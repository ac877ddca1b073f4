"""``landscape reproduce skip-vs-plain`` and ``landscape gradient-flow`` from the command line:
files written, flows stored in the surface file equal to the library's, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.analysis.gradient_flow import GROUP_NAME, from_group, gradient_flow
from landscape.cli import main
from landscape.data import load_data
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec
from landscape.storage import read_group

MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 2, "width": 8}
TINY = [
    "--pairs", "mlp-residual:mlp-plain", "--seeds", "0", "--epochs", "1",
    "--train-size", "96", "--test-size", "48", "--range", "0.25:3",
    "--model-arg", "depth=2", "width=8", "--device", "cpu", "--workers", "1", "--quiet",
]  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "landscape", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.slow
def test_reproduce_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "story"
    done = _cli("reproduce", "skip-vs-plain", "--out", str(out), *TINY)
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").exists() and (out / "report.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["epochs"] == 1 and report["recipe"]["seeds"] == [0]
    assert report["recipe"]["pairs"] == [["mlp-residual", "mlp-plain"]]
    assert set(report["nets"]) == {"mlp-residual/seed0", "mlp-plain/seed0"}
    assert [s["n"] for s in report["nets"]["mlp-plain/seed0"]["surfaces"]] == [3]
    assert str(out / "report.html") in done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epochs", "0"], "epochs"),
        (["--range", "0.25"], "--range takes HALF:N"),
        (["--pairs", "resnet20"], "--pairs takes SKIP:PLAIN"),
        (["--seeds", "1", "1"], "seeds must be distinct"),
        (["--family", "densenet"], "unknown family 'densenet'"),
        (["--precision", "fp16"], "unknown precision 'fp16'"),
        (["--precision", "tf32", "--device", "cpu"], "precision 'tf32' needs a CUDA device"),
    ],
)
def test_reproduce_bad_input_is_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    done = _cli("reproduce", "skip-vs-plain", "--out", str(tmp_path), *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr
    assert not (tmp_path / "report.json").exists()


def test_family_and_quick_choose_the_recipe() -> None:
    from landscape.cli import build_parser
    from landscape.cli.reproduce_cmd import out_dir, spec_from_args
    from landscape.report.recipe import ReproduceSpec, family_spec

    def parse(*args: str) -> argparse.Namespace:
        return build_parser().parse_args(["reproduce", "skip-vs-plain", *args])

    default = parse()
    assert spec_from_args(default) == ReproduceSpec(device="auto")  # today's recipe
    assert out_dir(default) == Path("cache/skip-vs-plain")
    args = parse("--family", "highway", "--quick", "--model-arg", "width=16", "--epochs", "3")
    spec = spec_from_args(args)
    assert spec.pairs == family_spec("highway").pairs and spec.seeds == (0, 1)
    assert spec.epochs == 3 and dict(spec.model_args) == {"gate_bias": -4, "width": 16}
    assert out_dir(args) == Path("cache/skip-vs-plain-highway-quick")
    assert spec_from_args(parse("--precision", "bf16")).precision == "bf16"
    tf32 = parse("--quick", "--precision", "tf32")
    assert out_dir(tf32) == Path("cache/skip-vs-plain-quick-tf32")
    assert out_dir(parse("--family", "recurrent", "--out", "x")) == Path("x")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose metadata records its seed, as train_model writes it."""
    torch.manual_seed(3)
    model = build("mlp-residual", **MODEL_ARGS)
    path = tmp_path_factory.mktemp("flow") / "net.pt"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # "trained": not the initialization
    return save_checkpoint(
        path, model, model_name="mlp-residual", model_args=MODEL_ARGS, metadata={"seed": 3}
    )


def test_gradient_flow_stored_in_the_surface(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    surface = tmp_path / "s.h5"
    fast = ["--train-size", "64", "--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]
    assert main(["surface", "--checkpoint", str(trained), "--grid", "3", *fast,
                 "--out", str(surface)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["gradient-flow", "--surface", str(surface), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "input/output gradient ratio" in printed and "stem.weight" in printed
    group = read_group(surface, GROUP_NAME)
    assert group is not None
    flows = from_group(*group)
    data = load_data(DataSpec(train_size=64), "train")
    model, _ = load_checkpoint(trained)
    reference = gradient_flow(model, data)
    np.testing.assert_allclose(flows["trained"].grad_norm, reference.grad_norm, rtol=1e-5)
    torch.manual_seed(3)
    initial = gradient_flow(build("mlp-residual", **MODEL_ARGS), data)
    np.testing.assert_allclose(flows["init"].grad_norm, initial.grad_norm, rtol=1e-5)
    assert not np.allclose(flows["init"].grad_norm, flows["trained"].grad_norm)


def test_gradient_flow_json_and_errors(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gradient-flow", "--checkpoint", str(trained), "--train-size", "32", "--quiet"]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    flows = json.loads(capsys.readouterr().out)
    assert set(flows) == {"init", "trained"} and flows["trained"]["n_samples"] == 32
    assert main(["gradient-flow"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main([*args, "--mode", "sideways"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sideways" in err


def test_gradient_flow_through_time_of_a_recurrent_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {"in_channels": 1, "num_classes": 10, "image_size": 8, "hidden": 8}
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "lstm.pt", build("lstm", **args), model_name="lstm", model_args=args,
        metadata={"seed": 0},
    )  # fmt: skip
    common = ["gradient-flow", "--checkpoint", str(path), "--train-size", "32", "--quiet"]
    assert main([*common, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "‖∂L/∂h_t‖ init" in printed and "first/last steps gradient ratio" in printed
    assert main([*common, "--device", "cpu", "--json"]) == 0
    flows = json.loads(capsys.readouterr().out)
    assert len(flows["trained"]["time_grad_norm"]) == 8
    assert flows["init"]["time_grad_norm"] == flows["trained"]["time_grad_norm"]  # untrained
