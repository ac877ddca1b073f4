"""``landscape surface → info → plot → export`` and the one-line errors of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from cli_support import MODEL_ARGS, error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint
from landscape.storage import read_surface

FAST = ["--train-size", "48", "--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_surface_info_plot_export(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "4", "--grid-y", "3"]
    assert main([*args, "--yrange", "-0.5", "0.5", "--splits", "train", "test", *FAST,
                 "--out", str(out)]) == 0  # fmt: skip
    assert "complete, 12/12 points" in capsys.readouterr().out
    surface = read_surface(out)
    assert surface.values["test_acc"].shape == (3, 4)
    assert surface.spec.grid.y_range == (-0.5, 0.5)

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "complete, 12/12 points" in text and "mlp-plain" in text and "sharpness" in text
    assert main(["info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] == 12 and summary["grid"]["ny"] == 3 and summary["id"] == surface.key

    html = tmp_path / "s.html"
    assert main(["plot", str(out), "--out", str(html), "--metric", "test_loss", "--log"]) == 0
    assert html.stat().st_size > 1_000_000
    vtp = tmp_path / "s.vtp"
    assert main(["export", str(out), "--vtp", str(vtp)]) == 0
    piece = ET.parse(vtp).getroot().find("PolyData/Piece")
    assert piece is not None and piece.attrib["NumberOfPoints"] == "12"


def test_one_dimensional_and_bare_state_dict(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare.pt"
    torch.save(build("mlp-plain", **MODEL_ARGS).state_dict(), bare)
    out = tmp_path / "c.h5"
    args = ["surface", "--checkpoint", str(bare), "--dim", "1", "--grid", "5", *FAST]
    assert main([*args, "--out", str(out)]) == 2
    assert "bare state_dict" in error_line(capsys)
    extra = json.dumps({"depth": 1, "width": 8})
    assert main([*args, "--model", "mlp-plain", "--model-args", extra, "--out", str(out)]) == 0
    surface = read_surface(out)
    assert surface.y is None and surface.done == 5 and surface.attrs["model"] == "mlp-plain"
    # the same command again, spelled as `landscape train` spells builder arguments, finds the
    # same surface (the wrapped checkpoint is reused)
    pairs = ["--model-arg", "depth=1", "--model-arg", "width=8"]
    assert main([*args, "--model", "mlp-plain", *pairs, "--out", str(out)]) == 0
    assert "5/5 points" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--range", "1", "-1"], "min < max"),
        (["--grid", "0"], "--grid must be a positive integer"),
        (["--normalization", "fliter"], "unknown normalization 'fliter'"),
        (["--splits", "val"], "unknown split 'val'"),
        (["--dataset", "nosuchdata"], "nosuchdata"),
        (["--dim", "4"], "--dim"),
        (["--grid-z", "3"], "--grid-z"),
        (["--dim", "1", "--yrange", "0", "1"], "--yrange"),
        (["--directions", "interpolate"], "--target"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "s.h5"
    argv = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", *FAST, "--out", str(out)]
    assert main([*argv, *extra]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_missing_files_and_mismatched_partial(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.h5"
    assert main(["surface", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "nope.pt" in error_line(capsys)
    for command in (["info"], ["plot"], ["export", "--vtp", str(tmp_path / "x.vtp")]):
        assert main([*command, str(tmp_path / "absent.h5")]) == 2
        assert "absent.h5" in error_line(capsys)

    base = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", *FAST, "--out", str(out)]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--seed", "7"]) == 2
    assert "directions.seed" in error_line(capsys)
    assert main(["plot", str(out), "--metric", "test_loss"]) == 2
    assert "unknown metric 'test_loss'" in error_line(capsys)


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    code = "import sys; from landscape.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "info", str(tmp_path / "absent.h5")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_finished_points(tmp_path: Path) -> None:
    """SIGINT to the whole process group (what a terminal's Ctrl-C does): exit 130, the
    file stays partial and resumable, no traceback, and the killed workers leave no
    semaphores behind: compiled, as by default, from a cold kernel cache (a fresh machine's
    first surface), which is when torch.fx opens its progress bar. A resnet20 over 31×31
    points, so the rest of the surface takes seconds after the first chunk lands (a tiny MLP
    can finish all of it between two polls, and a finished surface is not interrupted)."""
    torch.manual_seed(0)
    digits = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    checkpoint = save_checkpoint(
        tmp_path / "resnet20.pt",
        build("resnet20", **digits),
        model_name="resnet20",
        model_args=digits,
        metadata={},
    )
    out = tmp_path / "s.h5"
    code = "import sys; from landscape.cli import main; sys.exit(main(sys.argv[1:]))"
    # all of digits: on a smaller split the engine decides compiling does not pay
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "31", "--workers", "2",
            "--quiet", "--out", str(out)]  # fmt: skip
    cold_cache = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stderr=subprocess.PIPE,
        text=True,
        env=cold_cache,
        start_new_session=True,
        preexec_fn=_as_a_foreground_job,
    )
    try:
        deadline = time.monotonic() + 180
        while _done(out) == 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "leaked semaphore" not in err and "resource_tracker" not in err, err
    # No traceback from the command itself. (Engine worker processes also receive the
    # group's SIGINT and may print their own until they ignore it; see engine._worker_main.)
    assert "landscape/cli" not in err and "landscape/surface.py" not in err, err
    surface = read_surface(out)
    assert surface.status == "partial" and surface.done > 0


def _as_a_foreground_job() -> None:
    """Start the child with Ctrl-C deliverable, as a shell starts a foreground job, whatever
    the test runner's own state: a suite started in the background (``cmd &``) ignores SIGINT,
    and an ignored signal survives exec (as a blocked one is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _done(path: Path) -> int:
    if not path.exists():
        return 0
    return read_surface(path).done
