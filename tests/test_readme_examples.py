"""The README's Python example, saved as a script without an ``if __name__ == "__main__":``
guard, runs once: engine workers never re-run the user's script (landscape/engine/pool.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import tiny_mlp_checkpoint

from landscape import storage

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    """The README's first Python block up to the surface read (the notebook line needs a
    model of the reader's own), shrunk to a 3×3 grid on 64 images."""
    block = re.search(r"## Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README has no Python example"
    code = block.group(1).split("# Any nn.Module")[0]
    assert "GridSpec(n_x=21, n_y=21)" in code
    code = code.replace("GridSpec(n_x=21, n_y=21)", "GridSpec(n_x=3, n_y=3), "
                        "data=__import__('landscape').DataSpec(train_size=64)")  # fmt: skip
    return 'print("script started", flush=True)\n' + code + "print(surface.status)\n"


@pytest.mark.slow
def test_the_readme_python_example_runs_once_as_a_plain_script(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    tiny_mlp_checkpoint(tmp_path / "cache").rename(tmp_path / "cache" / "r20.pt")
    script = tmp_path / "example.py"
    script.write_text(_python_example())
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script started") == 1, done.stdout  # not re-run by workers
    assert done.stdout.strip().endswith("complete")
    surface = storage.read_surface(tmp_path / "s.h5")
    assert surface.status == "complete" and surface.values["train_loss"].shape == (3, 3)
