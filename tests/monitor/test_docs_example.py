"""docs/monitor.md's example, run as written in an empty folder, and its follow-up command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from landscape.monitor import read_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitor.md"


def _block(language: str, after: str) -> str:
    """The first ```language block after the line ``after`` of docs/monitor.md."""
    found = re.search(rf"{re.escape(after)}\n.*?```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None, f"docs/monitor.md has no {language} block after {after!r}"
    return found.group(1)


@pytest.mark.slow  # a fresh interpreter imports torch, TensorBoard and matplotlib
def test_the_monitor_docs_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from landscape.cli import main

    script = tmp_path / "docs_example.py"
    script.write_text(_block("python", "## Example"))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"step {s:>3}" for s in (0, 20, 40, 60, 80, 100)
    ]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["4.0"] * 3 + ["8.0"] * 3

    run = read_run(tmp_path / "runs" / "digits.h5")
    assert [r["step"] for r in run.sharpness] == [0, 20, 40, 60, 80, 100]
    assert len(run.surface2d.steps) + len([c for c in run.cuts if c["what"] == "surface2d"]) == 6
    events = EventAccumulator(str(tmp_path / "runs" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("landscape/lambda_max")] == [0, 20, 40, 60, 80, 100]

    monkeypatch.chdir(tmp_path)
    for line in _block("bash", "Then:").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["landscape"]:  # `tensorboard --logdir` serves until stopped: not run
            assert main(words[1:]) == 0
    assert "λmax of the mean training loss tracked in digits.h5" in capsys.readouterr().out
    assert (tmp_path / "runs" / "sharpness.html").stat().st_size > 1000
