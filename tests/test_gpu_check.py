"""scripts/gpu-check.py proves itself on CPU: every step runs small (or says why it skips), with
the web stack and ONNX import-blocked as on the GPU box, the table names every step and the
JSON records each one's status; a JSON line is written as each step ends, with the warnings it
raised; the service and the long-lived worker steps run here too."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from scripts.gpu_check import main as gpu_check
from scripts.gpu_check import records
from scripts.gpu_check.common import CPU_SIZES, Context, Result
from scripts.gpu_check.long_lived import judge
from scripts.gpu_check.service import service_env

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
    "i": "service",
    "j": "long-lived worker",
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
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out),
         "--long-lived-surfaces", "3"],
        env=_blocking_env(tmp_path / "site"), cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
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
    # no web stack on the GPU box: the service step says so instead of failing the run
    assert steps["i"]["status"] == "skip"
    assert "No module named" in steps["i"]["summary"], steps["i"]["summary"]
    per = steps["j"]["details"]["per_surface"]
    assert len(per) == 3 and all(p["compiled"] for p in per)

    lines = _journal(out)
    assert lines[0]["record"] == "versions" and lines[-1]["record"] == "summary"
    assert sorted(line["step"] for line in lines[1:-1]) == sorted(STEPS)


def _journal(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "gpu-check.jsonl").read_text().splitlines()]


# -- the journal, warnings and versions, with stand-in steps -------------------------------
def _run_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: dict[str, Any],
                    ) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    for letter, step in steps.items():
        monkeypatch.setitem(gpu_check.RUNNERS, letter, step)
    out = tmp_path / "out"
    rc = gpu_check.main(["--device", "cpu", "--out", str(out), "--only", *steps])
    return rc, _journal(out)


def test_each_step_line_is_on_disk_when_the_next_step_starts_with_its_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[dict[str, Any]]] = []

    def warns(ctx: Context) -> Result:
        warnings.warn("a step's own warning", UserWarning, stacklevel=1)
        logging.getLogger("landscape.engine.stand_in").warning("logged at %s", "warning level")
        logging.getLogger("landscape.engine.stand_in").info("not a warning")
        return Result("pass", "warned")

    def reads_the_journal(ctx: Context) -> Result:
        seen.append(_journal(ctx.out))
        return Result("pass", "quiet")

    rc, lines = _run_in_process(tmp_path, monkeypatch, {"a": warns, "c": reads_the_journal})
    assert rc == 0
    assert [line.get("step", line["record"]) for line in seen[0]] == ["versions", "a"]
    assert [line.get("step", line["record"]) for line in lines] == ["versions", "a", "c", "summary"]
    a, c = lines[1], lines[2]
    assert a["status"] == "pass" and a["name"] == "versions"
    found = {(w["source"], w["category"], w["message"]) for w in a["warnings"]}
    assert found == {
        ("warnings", "UserWarning", "a step's own warning"),
        ("logging", "WARNING", "logged at warning level"),
    }
    assert c["warnings"] == []
    assert lines[-1]["statuses"] == {
        letter: "pass" if letter in "ac" else "skip" for letter in STEPS
    }
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert report["steps"]["a"]["warnings"] == a["warnings"]
    assert report["versions"]["record"] == "versions"


def test_sigterm_keeps_the_finished_steps_and_records_the_interrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def terminated(ctx: Context) -> Result:
        os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` sends at its limit
        time.sleep(30)
        return Result("pass", "never reached")

    steps = {"a": lambda ctx: Result("pass", "done"), "c": terminated,
             "d": lambda ctx: Result("pass", "never started")}  # fmt: skip
    started = time.monotonic()
    rc, lines = _run_in_process(tmp_path, monkeypatch, steps)
    assert rc == 1 and time.monotonic() - started < 25
    by_step = {line["step"]: line for line in lines if line["record"] == "step"}
    assert set(by_step) == {"a", "c"}
    assert by_step["a"]["status"] == "pass"
    assert by_step["c"]["status"] == "fail"
    assert by_step["c"]["summary"].startswith("interrupted by SIGTERM")
    assert lines[-1]["record"] == "summary" and lines[-1]["failed"] == ["c"]
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert report["steps"]["d"]["summary"] == "not run: interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is not gpu_check._interrupt  # handler put back


VERSION_KEYS = {"driver", "cuda", "cuda_runtime", "cuda_driver_api", "cudnn", "triton", "torch",
                "python", "gpu", "gpu_memory_bytes"}  # fmt: skip


def _context(tmp_path: Path, device: str) -> Context:
    _, args = gpu_check.parse_args(["--device", "cpu", "--out", str(tmp_path)])
    return Context(args, torch.device(device), CPU_SIZES, tmp_path, tmp_path)


def test_the_versions_record_names_torch_cuda_cudnn_triton_and_python(tmp_path: Path) -> None:
    record = records.versions_record(_context(tmp_path, "cpu"))
    assert set(record) >= VERSION_KEYS, VERSION_KEYS - set(record)
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    if torch.backends.cudnn.is_available():
        assert record["cudnn"] == torch.backends.cudnn.version()
    assert record["gpu"] is None and record["driver"] is None  # a CPU run
    json.dumps(record)


def test_the_versions_record_of_a_cuda_run_names_the_gpu_its_memory_and_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(records, "driver_version", lambda index: "570.124.06")
    record = records.versions_record(_context(tmp_path, "cuda:0"))
    assert record["gpu"] == "NVIDIA H100 80GB HBM3"
    assert record["gpu_memory_bytes"] == 80 * 2**30 and record["driver"] == "570.124.06"


# -- the long-lived worker's verdict --------------------------------------------------------
def _surface(i: int, graphs: int, new: int, compiled: bool = True) -> dict[str, Any]:
    return {"surface": i, "status": "complete", "finite": True, "compiled": compiled,
            "compile_reason": "forced", "compile_errors": [], "graphs": graphs,
            "new_graphs": new}  # fmt: skip


def test_a_long_lived_run_fails_when_graphs_keep_growing_or_the_last_surface_ran_eager() -> None:
    bounded = [_surface(1, 2, 2)] + [_surface(i, 2, 0) for i in range(2, 7)]
    assert judge(bounded, 6, 300) == []
    growing = [_surface(i, 2 * i, 2) for i in range(1, 7)]
    assert judge(growing, 6, 300) == [
        "the last 3 surfaces added 6 compiled graphs (12 in all): one more with every surface"
    ]
    eager_last = [*bounded[:-1], {**_surface(6, 2, 0, compiled=False), "compile_errors": ["hit"]}]
    assert judge(eager_last, 6, 300) == ["surface 6 ran eager: hit"]
    assert judge(bounded[:4], 6, 300) == ["only 4 of 6 surfaces within the 300 s budget"]


# -- the service and the long-lived worker, for real ----------------------------------------
def test_the_service_step_skips_naming_what_is_missing_without_the_web_stack(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--only", "i"],
        env=_blocking_env(tmp_path / "site"), cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (step,) = [line for line in _journal(out) if line["record"] == "step"]
    assert step["step"] == "i" and step["status"] == "skip"
    assert "No module named" in step["summary"], step["summary"]
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert printed == _journal(out)  # each line printed as it is written


def test_the_served_process_gets_the_device_and_none_of_the_callers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANDSCAPE_DATABASE_URL", "postgresql://operator/jobs")
    monkeypatch.setenv("LANDSCAPE_API_TOKEN", "secret")
    env = service_env(_context(tmp_path, "cuda:1"), tmp_path / "data")
    landscape = {k: v for k, v in env.items() if k.startswith("LANDSCAPE_")}
    assert landscape == {
        "LANDSCAPE_DATA_DIR": str(tmp_path / "data"),
        "LANDSCAPE_DEVICE": "cuda",
        "LANDSCAPE_COMPUTE_DEVICE": "cuda",
        "LANDSCAPE_ENGINE_DEVICES": "[1]",
        "LANDSCAPE_POLL_SECONDS": "0.2",
        "LANDSCAPE_PROGRESS_EVERY_SECONDS": "0",
    }
    assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)


@pytest.mark.slow  # ~40 s on 2 cores: a server start, a training epoch, one cold compile
def test_the_service_and_long_lived_steps_compute_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--only", "i", "j",
         "--long-lived-surfaces", "5"],
        env={**os.environ, "PYTHONPATH": path}, cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    shown = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    steps = {line["step"]: line for line in _journal(out) if line["record"] == "step"}
    service = steps["i"]
    assert service["status"] == "pass", shown
    details = service["details"]
    assert details["job_status"] == "done" and details["rest_values"] == 2 * 5 * 5
    assert details["engine"]["device"] == "cpu" and details["file_bytes"] > 0
    assert details["stop"]["clean"] is True

    worker = steps["j"]
    per = worker["details"]["per_surface"]
    assert [p["surface"] for p in per] == [1, 2, 3, 4, 5]
    assert all(isinstance(p["compiled"], bool) and isinstance(p["graphs"], int) for p in per)
    assert per[-1]["compiled"] is True  # forced compile, one process
    # one architecture: its graphs compiled once, every later surface reuses them
    assert worker["status"] == "pass" and judge(per, 5, 300) == [], worker["summary"]
    assert [p["new_graphs"] > 0 for p in per] == [True, False, False, False, False]
    assert [p["engine"]["compile_reused"] for p in per] == [False, True, True, True, True]
