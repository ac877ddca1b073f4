"""A new user's first commands: a ``--model-factory`` module next to where the command runs is
found without PYTHONPATH, as ``python -m`` would find it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

LANDSCAPE = Path(sys.executable).with_name("landscape")


def test_a_factory_in_the_current_folder_is_importable(tmp_path: Path) -> None:
    (tmp_path / "mynets.py").write_text("def make_net(**kwargs):\n    raise ValueError\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [str(LANDSCAPE) if LANDSCAPE.exists() else shutil.which("landscape") or "landscape"]
    done = subprocess.run(
        [*command, "surface", "--checkpoint", "w.pt", "--out", "s.h5",
         "--model-factory", "mynets:missing"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    # imported (the attribute is what is missing), not "cannot import module"
    assert "'mynets' has no attribute 'missing'" in done.stderr, done.stderr
