"""Progress written to a file or pipe: a whole line every few seconds, the last state once."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import tiny_mlp_checkpoint

from landscape.cli.progress import PIPE_INTERVAL_S, LineBar, step_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_bar_writes_once_per_interval_and_its_end_once() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = LineBar(800, "surface", unit="pt", file=out, interval=5.0, clock=clock)
    for step in range(1, 801):  # 800 steps over 25 s (1/32 s each: exact in binary)
        clock.now = step / 32
        bar.update(1)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines  # at 5, 10, 15, 20 s and the end
    assert lines[0] == "surface:  20% 160/800 pt [00:05<00:20]", lines[0]
    assert [line for line in lines if "100%" in line] == [lines[-1]]
    assert lines[-1] == "surface: 100% 800/800 pt [00:25<00:00]", lines


def test_a_bar_closed_where_its_last_line_stood_writes_nothing_more() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = LineBar(10, "hessian", file=out, interval=1.0, clock=clock)
    clock.now = 2.0
    bar.update(4)
    bar.close()  # cancelled at 40 %: that line already stands
    assert out.getvalue().splitlines() == ["hessian:  40% 4/10 it [00:02<00:03]"]


def test_a_bar_closed_before_its_first_step_writes_nothing() -> None:
    out = io.StringIO()
    LineBar(2, "train mlp-plain", file=out, clock=FakeClock()).close()  # the spec was bad
    assert out.getvalue() == ""


def test_step_bar_on_a_pipe_names_the_step_in_its_last_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = step_bar(False, "reproduce", weights=[1.0, 3.0])
    bar(0, 2, "train")
    bar(1, 2, "surface")
    bar(2, 2, "report")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("reproduce: 100% [")
    assert lines[-1].endswith(", step 2/2, report"), lines


def test_surface_to_a_pipe_prints_few_lines_and_one_hundred_percent(tmp_path: Path) -> None:
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    command = [
        sys.executable, "-m", "landscape.cli", "surface", "--checkpoint", str(checkpoint),
        "--grid", "8", "--train-size", "100", "--workers", "1", "--no-compile",
        "--device", "cpu", "--out", str(tmp_path / "s.h5"),
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    # a terminal redraw is a carriage return: count those as lines too
    bars = [line for line in re.split(r"[\r\n]", done.stderr) if line.startswith("surface:")]
    assert 1 <= len(bars) <= duration / PIPE_INTERVAL_S + 3, (duration, bars)
    assert sum("100%" in line for line in bars) == 1, bars
    assert bars[-1].startswith("surface: 100% 64/64 pt"), bars
    assert "complete, 64/64 points" in done.stdout
