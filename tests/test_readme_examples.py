"""The README's examples, run as written (shrunk only where a line names its own size)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from landscape import storage

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    """The README's Python block, exactly as printed."""
    block = re.search(r"## Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README has no Python example"
    return block.group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written_in_an_empty_folder(tmp_path: Path) -> None:
    """The very text, saved as a script without an ``if __name__ == "__main__":`` guard, runs
    once (engine workers never re-run the user's script: landscape/engine/pool.py) and leaves
    both complete surfaces."""
    script = tmp_path / "example.py"
    script.write_text(_python_example())
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "complete (11, 11)", done.stdout[-2000:]
    assert done.stdout.count("complete") == 1, done.stdout  # not re-run by workers
    for name in ("mine.h5", "s.h5"):
        surface = storage.read_surface(tmp_path / name)
        assert surface.status == "complete" and surface.values["train_loss"].shape == (11, 11)


def _block(heading: str) -> str:
    """The first ```bash block under the README's ``## heading``."""
    found = re.search(rf"## {heading}\n.*?```bash\n(.*?)```", README.read_text(), re.S)
    assert found is not None, f"README has no {heading} example"
    return found.group(1)


def _shrunk(text: str, changes: dict[str, str]) -> str:
    """``text`` with each change made, each of which must apply (the README still says it)."""
    for old, new in changes.items():
        assert old in text, f"the README example no longer says {old!r}"
        text = text.replace(old, new)
    return text


# The CLI block's lines that run for as long as they are left (serve, worker), need a
# gradient-descent run of the reader's own (sharpness --history gd.pt) or have tests of their
# own at a small recipe (reproduce: tests/cli/test_cli_reproduce.py).
NOT_RUN_HERE = ("landscape serve", "landscape worker", "landscape sharpness", "landscape reproduce")


@pytest.mark.slow
def test_the_readme_cli_example_runs_as_written_at_a_small_size(tmp_path: Path) -> None:
    """Each line as the README prints it, run in the project's environment, at 1 epoch, a 3×3
    grid and a 32-image Hessian of 10 Lanczos steps: every command exits 0 and leaves what
    it says."""
    lines = [
        line.split("  #")[0].strip()
        for line in _block("Command line").splitlines()
        if line.startswith("landscape ") and not line.startswith(NOT_RUN_HERE)
    ]
    script = _shrunk(
        "\n".join(lines),
        {"--epochs 10": "--epochs 1", "--grid 21": "--grid 3", "--density-probes 3":
         "--density-probes 3 --density-steps 8 --samples 32 --trace-samples 4 --steps 10"},
    )  # fmt: skip
    assert script.count("landscape ") == 7, script
    (tmp_path / "cache").mkdir()
    bin_dir = str(Path(sys.executable).parent)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
        text=True, timeout=900, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("r20.pt", "s.h5", "s.html", "s.vtp"):
        assert (tmp_path / "cache" / name).stat().st_size > 0, name
    surface = storage.read_surface(tmp_path / "cache" / "s.h5")
    assert surface.status == "complete" and surface.values["train_loss"].shape == (3, 3)
    assert "hessian" in surface.groups and "gradient_flow" in surface.groups
    assert "converged" in done.stdout.lower()


@pytest.mark.slow
def test_the_readme_rest_example_runs_as_written_at_a_small_size(tmp_path: Path) -> None:
    """The REST block against a real ``landscape serve``, with curl, at 1 epoch and 3×3: the
    event stream ends with the job done and the downloaded file is the complete surface."""
    from tests.server_support import ServeProcess

    env = {**os.environ, "LANDSCAPE_DEVICE": "cpu", "LANDSCAPE_ENGINE_WORKERS": "1"}
    server = ServeProcess(tmp_path, env)
    try:
        host = server.url.removeprefix("http://")
        script = _shrunk(
            _block("REST"),
            {'"epochs": 30': '"epochs": 1', '"nx": 21, "ny": 21': '"nx": 3, "ny": 3',
             "localhost:8000": host},
        )  # fmt: skip
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    events = [line for line in done.stdout.splitlines() if line.startswith("event:")]
    assert events and events[-1] == "event: done", events[-5:]
    surface = storage.read_surface(tmp_path / "surface.h5")
    assert surface.status == "complete" and surface.values["train_loss"].shape == (3, 3)
    assert surface.spec.grid.n_x == 3
