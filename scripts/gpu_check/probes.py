"""Steps a and b: versions, compiler and a cold-cache compile; the GPU tests in a subprocess."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.gpu_check.common import (
    GPU_MARK,
    ROOT,
    Context,
    Result,
    Skip,
    driver_version,
    gib,
    na,
    version_of,
)


# -- a: versions, compiler, torch.compile ----------------------------------------------------
def step_versions(ctx: Context) -> Result:
    import torch

    from landscape.engine.plan import cpu_count, cpu_model

    d: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": version_of("triton"),
        **{name: version_of(name) for name in ("numpy", "scipy", "scikit-learn", "h5py")},
        "pytest": version_of("pytest"),
    }
    with contextlib.suppress(Exception):
        d["git"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=10,
            ).stdout.strip()
            or None
        )
    if ctx.cuda:
        index = ctx.device.index or 0
        props = torch.cuda.get_device_properties(index)
        d |= {
            "gpu": torch.cuda.get_device_name(index),
            "gpus_visible": torch.cuda.device_count(),
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory": gib(props.total_memory),
            "driver": driver_version(index),
        }
    include = sysconfig.get_paths().get("include", "")
    d["compilers"] = {name: shutil.which(name) for name in ("cc", "gcc", "g++", "clang", "c++")} | {
        "CC": os.environ.get("CC"),
        "Python.h": os.path.isfile(os.path.join(include, "Python.h")),
    }
    d["cc_builds_extension"] = build_probe(ctx.tmp / "cc-probe", include)
    d["torch_compile"] = compile_probe(ctx)
    compile_ok = bool(d["torch_compile"]["ok"])
    where = (
        f"{d['gpu']}, driver {d['driver']}"
        if ctx.cuda
        else f"CPU {d['cores']} cores, {d['torch_threads']} torch thread(s)"
    )
    cc = d["compilers"]["cc"] or d["compilers"]["gcc"] or d["compilers"]["clang"] or "NONE"
    probe = d["cc_builds_extension"]
    cc += " (builds a Python extension)" if probe["ok"] else f" (FAILS: {probe['error']})"
    compiled = (
        f"torch.compile ok, cold caches ({d['torch_compile']['seconds']:.1f} s)"
        if compile_ok
        else f"torch.compile FAILED: {str(d['torch_compile']['error']).splitlines()[0][:160]}"
    )
    summary = (
        f"torch {d['torch']}, CUDA {na(d['cuda'])}, cuDNN {na(d['cudnn'])}, triton {d['triton']}; "
        f"{where}; cc {cc}; {compiled}"
    )
    return Result("pass" if compile_ok else "fail", summary, details=d)


_COMPILE_PROBE = """
import json, sys, time
import torch

device = sys.argv[1]


def tiny(x):
    return torch.sin(x) * 2 + x.cos() ** 2


x = torch.linspace(-3, 3, 4096, device=device)
start = time.perf_counter()
try:
    got = torch.compile(tiny, fullgraph=True)(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ok = bool(torch.allclose(got, tiny(x), rtol=1e-5, atol=1e-6))
    error = None if ok else "compiled result differs from eager"
except Exception as exc:
    ok, error = False, f"{type(exc).__name__}: {exc}"[:400]
print(json.dumps({"ok": ok, "error": error, "seconds": time.perf_counter() - start}))
"""


def compile_probe(ctx: Context) -> dict[str, Any]:
    """torch.compile of a tiny function on the device, in a fresh process with empty inductor
    and Triton caches: a kernel cached by an earlier run would need no compiler, and would
    hide a missing one."""
    caches = ctx.tmp / "compile-probe"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
           "TRITON_CACHE_DIR": str(caches / "triton")}  # fmt: skip
    device = f"cuda:{ctx.device.index or 0}" if ctx.cuda else "cpu"
    try:
        run = subprocess.run(
            [sys.executable, "-c", _COMPILE_PROBE, device], env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timed out after 300 s", "seconds": 300.0}
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or [f"exit {run.returncode}"]
        return {"ok": False, "error": tail[0][:400], "seconds": None}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def build_probe(folder: Path, include: str) -> dict[str, Any]:
    """What Triton does at run time: build a C file that includes Python.h into a shared
    object, with the compiler on PATH (``CC`` first)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return {"ok": False, "error": "no C compiler on PATH", "compiler": None}
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "probe.c"
    source.write_text("#include <Python.h>\nint probe(void) { return Py_IsInitialized(); }\n")
    command = [*cc.split(), "-shared", "-fPIC", "-O0", f"-I{include}", str(source), "-o",
               str(folder / "probe.so")]  # fmt: skip
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200], "compiler": cc}
    ok = run.returncode == 0 and (folder / "probe.so").exists()
    error = None if ok else (run.stderr.strip().splitlines() or ["failed"])[-1][:200]
    return {"ok": ok, "error": error, "compiler": cc}


# -- b: the GPU tests --------------------------------------------------------------------------
@dataclass
class GpuTests:
    """The ``pytest -m gpu`` subprocess of step b, started early so that it may run beside
    steps c–e (they time nothing; the steps that do, f and g, wait for it)."""

    files: list[str]
    proc: Any  # subprocess.Popen
    log: Path
    junit: Path
    started: float
    deadline: float


def start_gpu_tests(ctx: Context) -> GpuTests:
    if not ctx.cuda:
        raise Skip("needs CUDA")
    tests = ROOT / "tests"
    if not tests.is_dir():
        raise Skip(f"no tests/ beside the script ({tests})")
    if importlib.util.find_spec("pytest") is None:
        raise Skip("pytest is not installed")
    # files carrying a gpu mark: `pytest -m gpu tests/` would also collect the API tests,
    # whose imports (FastAPI, …) a box without the web stack cannot satisfy
    files = sorted(
        str(p.relative_to(ROOT))
        for p in tests.rglob("test_*.py")
        if GPU_MARK.search(p.read_text(encoding="utf-8", errors="replace"))
    )
    if not files:
        raise RuntimeError("no test file carries a gpu mark")
    junit, log = ctx.out / "gpu-tests.xml", ctx.out / "gpu-tests.log"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit}", *files]  # fmt: skip
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with log.open("w") as sink:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    now = time.perf_counter()
    timeout = ctx.args.pytest_timeout or ctx.sizes.pytest_timeout_s
    return GpuTests(files, proc, log, junit, now, now + timeout)


def finish_gpu_tests(run: GpuTests) -> Result:
    try:
        rc: int | None = run.proc.wait(timeout=max(1.0, run.deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGKILL)  # pytest and the workers it started
        run.proc.wait()
        rc = None
    output = run.log.read_text(errors="replace")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if run.junit.exists():
        root = ET.parse(run.junit).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    details = {"files": run.files, "rc": rc, **counts, "passed": passed,
               "failed_tests": failed, "output_tail": output[-3000:]}  # fmt: skip
    summary = (
        f"{passed} passed, {counts['failures'] + counts['errors']} failed, "
        f"{counts['skipped']} skipped ({len(run.files)} files)"
    )
    if rc is None:
        timeout = run.deadline - run.started
        return Result("fail", f"timed out after {timeout:.0f} s; {summary}", details=details)
    if failed:
        summary += ": " + ", ".join(f.rsplit("::", 1)[-1] for f in failed[:3])
    bad = counts["failures"] or counts["errors"] or rc != 0 or passed == 0
    if rc != 0 and not failed:
        summary += f"; pytest exit code {rc} (see gpu-tests.log)"
    elif passed == 0:
        summary += "; none passed (does pytest see CUDA?)"
    return Result("fail" if bad else "pass", summary, details=details)


def step_gpu_tests(ctx: Context) -> Result:
    return finish_gpu_tests(start_gpu_tests(ctx))
