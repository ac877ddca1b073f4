"""``landscape train``: a tiny run end to end, and bad input → one line, exit 2, no traceback."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape.cli import SUBCOMMANDS, train_cmd
from landscape.errors import CheckpointError, DatasetNotFoundError, LandscapeError, UnknownNameError

TINY = ["--dataset", "digits", "--train-size", "64", "--test-size", "32", "--epochs", "2",
        "--device", "cpu"]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    """A parser with only this module's subcommand, as ``landscape.cli`` builds it."""
    parser = argparse.ArgumentParser(prog="landscape")
    train_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_tiny_training_writes_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r20.pt"
    args = parse(
        ["train", "--model", "resnet20", "--out", str(out), "--snapshot-every", "1", *TINY]
    )
    assert args.func(args) == 0
    assert "test acc" in capsys.readouterr().out
    content = torch.load(out, weights_only=True)
    assert content["model"] == "resnet20"
    assert content["metadata"]["train_spec"]["data"]["train_size"] == 64
    assert len(list((tmp_path / "r20.snapshots").glob("epoch_*.pt"))) == 3


def test_arguments_become_the_spec() -> None:
    args = parse(["train", "--model", "mlp-plain", "--out", "x.pt", "--lr", "0.01", "--optimizer",
                  "adam", "--schedule", "step", "--weight-decay", "0", "--batch-size", "16",
                  "--seed", "3", "--data-root", "/d", "--download"])  # fmt: skip
    spec = train_cmd.spec_from_args(args)
    assert (spec.lr, spec.optimizer, spec.schedule, spec.weight_decay) == (0.01, "adam", "step", 0)
    assert (spec.batch_size, spec.seed, spec.data.data_root, spec.data.download) == (
        16,
        3,
        "/d",
        True,
    )


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["--model", "resnet21"], UnknownNameError, "unknown model 'resnet21'"),
        (["--model", "resnet20", "--optimizer", "rmsprop"], UnknownNameError, "sgd, adam"),
        (["--model", "resnet20", "--dataset", "cifar10", "--data-root", "/nonexistent"],
         DatasetNotFoundError, "/nonexistent/cifar-10-batches-py"),
        (["--model", "resnet20", "--epochs", "0"], LandscapeError, "epochs must be >= 1"),
    ],
)  # fmt: skip
def test_bad_input_is_a_landscape_error(
    tmp_path: Path, extra: list[str], error: type[Exception], match: str
) -> None:
    args = parse(["train", "--out", str(tmp_path / "x.pt"), *extra])
    with pytest.raises(error, match=match) as info:
        args.func(args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.pt").exists()


def test_corrupt_resume_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    out = tmp_path / "r20.pt"
    (tmp_path / "r20.pt.partial").write_bytes(b"\x00garbage")
    args = parse(["train", "--model", "resnet20", "--out", str(out), *TINY])
    with pytest.raises(CheckpointError, match=r"r20\.pt\.partial") as info:
        args.func(args)
    assert "\n" not in str(info.value)


MAIN = "import sys; from landscape.cli import main; sys.exit(main())"
ALL_COMMANDS = all(
    importlib.util.find_spec(f"landscape.cli.{name}_cmd") is not None for name in SUBCOMMANDS
)


@pytest.mark.skipif(not ALL_COMMANDS, reason="landscape.cli needs every subcommand module")
@pytest.mark.parametrize(
    "extra",
    [
        ["--model", "resnet21"],
        ["--model", "resnet20", "--dataset", "cifar10", "--data-root", "/nonexistent"],
        ["--model", "resnet20", "--out-corrupt"],
    ],
)
def test_real_command_exits_2_with_one_line(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "x.pt"
    if "--out-corrupt" in extra:
        extra = extra[:-1]
        (tmp_path / "x.pt.partial").write_bytes(b"\x00garbage")
    result = subprocess.run(
        [sys.executable, "-c", MAIN, "train", "--out", str(out), *TINY, *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
