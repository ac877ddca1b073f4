"""scripts/gpu-check.py proves itself on CPU: every step runs small (or says why it skips), with
the web stack and ONNX import-blocked as on the GPU box, the table names every step and the
JSON records each one's status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.py"
STEPS = {
    "a": "versions",
    "b": "gpu tests",
    "c": "correctness",
    "d": "six evaluators",
    "e": "host syncs",
    "f": "resnet56",
    "g": "surface",
    "h": "worker pool",
}
# Not on the GPU box (it has torch, numpy, scipy, scikit-learn, h5py, pytest): the script and
# the landscape modules it imports must not need them — in spawned workers either, hence a
# sitecustomize on PYTHONPATH rather than a guard in this process.
BLOCKED = ("fastapi", "starlette", "uvicorn", "plotly", "onnx", "onnxruntime", "onnx2torch",
           "pydantic", "pydantic_settings", "sqlalchemy", "ray", "httpx", "multipart",
           "safetensors", "api")  # fmt: skip
# Every finder on sys.meta_path answers "not found" for them, as on a box where they are not
# installed: ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` gives None
# (torch._dynamo probes optional packages that way).
SITECUSTOMIZE = f"""
import sys

BLOCKED = {set(BLOCKED)!r}


class _Hidden:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
"""


def _blocking_env(site: Path) -> dict[str, str]:
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def test_the_blocked_modules_look_uninstalled(tmp_path: Path) -> None:
    env = _blocking_env(tmp_path / "site")
    probe = (
        "import importlib.util, sys\n"
        f"assert all(importlib.util.find_spec(m) is None for m in {BLOCKED!r})\n"
        "assert importlib.util.find_spec('torch') is not None\n"
        "import landscape.engine\n"
        "import fastapi\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.rstrip().endswith("ModuleNotFoundError: No module named 'fastapi'")


@pytest.mark.slow  # 1–3 minutes on 2 cores: the steps compile and spawn workers
def test_gpu_check_runs_every_step_on_cpu_without_the_web_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out)],
        env=_blocking_env(tmp_path / "site"), cwd=tmp_path, capture_output=True, text=True,
        timeout=480,
    )  # fmt: skip
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, shown

    rows = {}
    for letter, name in STEPS.items():
        row = re.search(rf"^{letter} {name}\s+(pass|fail|skip)\s+([\d.]+)\s", result.stdout, re.M)
        assert row, f"no table row for step {letter} {name}\n{shown}"
        rows[letter] = row.group(1)
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["device"] == "cpu" and report["ok"] is True and report["failed"] == []
    assert set(report["steps"]) == set(STEPS)
    for letter, step in report["steps"].items():
        assert step["status"] in ("pass", "skip"), (letter, step["summary"])
        assert step["status"] == rows[letter] and isinstance(step["seconds"], float)
    assert (out / "gpu-check.txt").read_text().startswith("step")

    steps = report["steps"]
    # what CI can prove on a CPU: versions + a real torch.compile, the fp32 cells of the grid
    # against the reference loop, evaluator life cycle, ResNet-56, a surface file, a kill
    for letter in "acdfgh":
        assert steps[letter]["status"] == "pass", (letter, steps[letter]["summary"])
    assert steps["b"]["status"] == "skip" and "CUDA" in steps["b"]["summary"]
    assert steps["a"]["details"]["torch_compile"]["ok"] is True
    cells = steps["c"]["details"]["cells"]
    assert len(cells) == 12
    for label, cell in cells.items():
        if label.startswith("fp32"):
            assert cell["status"] == "pass", (label, cell)
            assert cell["max_rel_err"] <= cell["tolerance"]
        else:
            assert cell["status"] == "skip" and cell["why"] == "needs CUDA", (label, cell)
    assert steps["h"]["details"]["restarts"] == 1
    assert steps["g"]["details"]["runs"]["default"]["status"] == "complete"
