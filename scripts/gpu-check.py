#!/usr/bin/env python3
"""One command that checks a GPU box end to end and says, step by step, what holds.

    python scripts/gpu-check.py --device cuda --out DIR     # `make gpu-check`; ≤ 8 min, H100/H200
    python scripts/gpu-check.py --device cpu --out DIR      # the same steps, small: CI
    python scripts/gpu-check.py --only a c f                # some steps (the others: skip)

On CUDA the GPU tests (b) run in a subprocess beside steps c–e, which time nothing; steps f–h
wait for them (``--serial``: run b alone). On CPU this process uses one torch thread
(``--threads``), as each engine worker does.

Steps (each reports pass / fail / skip, its key numbers and seconds):

  a versions        torch, CUDA, cuDNN, Triton, GPU, driver; a C compiler on PATH (and that it
                    builds a Python extension, as Triton does); whether torch.compile compiles a
                    tiny function on the device, in a fresh process with empty caches
  b gpu tests       ``pytest -m gpu -q`` over the test files that carry a gpu mark (a file
                    importing the web stack would stop collection on a box without it)
  c correctness     fp32/tf32/bf16 × eager/forced compile × K ∈ {1, 4} against the CPU
                    reference loop (resnet20 on digits): max relative error of the loss per cell
  d six evaluators  six GridEvaluators built and closed in one process: recompiles, CUDA memory
                    before/after (must return to the baseline)
  e host syncs      per grid point: the engine's ``describe()["host_syncs"]`` and, on CUDA, the
                    synchronizing calls torch's sync debug mode counts
  f resnet56        ResNet-56 on 50,000 CIFAR-shaped random samples: the engine's memory model vs
                    ``torch.cuda.max_memory_allocated``; tf32 and bf16 s/point, projected 51×51
  g surface         a 21×21 resnet20-on-digits surface through ``compute_surface`` (HDF5 in a
                    temp dir), engine defaults vs compile=False: wall times, values agree
  h worker pool     two engine workers on one GPU, one SIGKILLed mid-run: replaced, values still
                    equal the reference (the engine runs one worker per GPU: the check then
                    drives its WorkerPool with two processes on the GPU itself)

Needs only torch, numpy, scipy, scikit-learn, h5py (and pytest for step b): the landscape
modules it imports pull in no FastAPI, Plotly or ONNX (tests/test_gpu_check.py runs it with
those blocked). Engine details it reads from ``GridEvaluator.describe()`` (``compiled``,
``compile_reason``, ``oom_retries``, ``batch_size``, ``points_per_call``, ``host_syncs``,
``precision``) are read with ``.get`` and shown as n/a where an engine lacks them.

Writes ``DIR/gpu-check.json`` (every step: status, summary, seconds, details) and
``DIR/gpu-check.txt`` (the table); step b adds ``gpu-tests.xml`` and ``gpu-tests.log``. Exits 1
if any step failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a checkout without `pip install` (the GPU box)
    sys.path.insert(0, str(ROOT))

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
PRECISIONS = ("fp32", "tf32", "bf16")
# max relative error of the mean loss vs the CPU reference loop (fp32 on the CPU)
TOLERANCE = {"fp32": 1e-5, "tf32": 2e-3, "bf16": 3e-2}
# max difference of the accuracy (a fraction): samples on a decision boundary may flip
ACC_TOLERANCE = {"fp32": 0.0, "tf32": 1e-2, "bf16": 3e-2}
MEMORY_SLACK = 4 * 2**20  # CUDA bytes still allocated after six evaluators that count as none
GPU_MARK = re.compile(r"\bmark\.gpu\b")


@dataclass(frozen=True)
class Sizes:
    """How big each step is: full on CUDA, small on CPU (the script proving itself in CI)."""

    digits: int  # digits training samples for steps c, d, e, h
    grid: int  # side of the step-g surface
    resnet56_samples: int
    timed_points: int  # step f: points timed after a warm-up point
    speed_precisions: tuple[str, ...]
    pool_chunks: int  # step h: chunks of 3 points
    lifecycle_points: int  # step d/e: n_points the evaluators are told (compile is weighed on it)
    pytest_timeout_s: int
    sync_chunk: int  # step e: points per chunk (one warm-up chunk, two counted)


CUDA_SIZES = Sizes(
    digits=512, grid=21, resnet56_samples=50_000, timed_points=3,
    speed_precisions=("tf32", "bf16"), pool_chunks=8, lifecycle_points=441,
    pytest_timeout_s=300, sync_chunk=8,
)  # fmt: skip
CPU_SIZES = Sizes(
    digits=128, grid=5, resnet56_samples=256, timed_points=1, speed_precisions=("fp32",),
    pool_chunks=6, lifecycle_points=25, pytest_timeout_s=60, sync_chunk=2,
)  # fmt: skip


class Skip(Exception):
    """A step (or cell) that cannot run here; the message says why."""


@dataclass
class Result:
    status: str = "pass"  # pass | fail | skip
    summary: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # sub-rows: label, status, text


@dataclass
class Context:
    args: argparse.Namespace
    device: Any  # torch.device
    sizes: Sizes
    out: Path
    tmp: Path

    @property
    def cuda(self) -> bool:
        return bool(self.device.type == "cuda")

    def options(self, **kwargs: Any) -> Any:
        """EngineOptions on this run's device: one GPU (``--gpu``), or in-process on CPU."""
        from landscape.specs import EngineOptions

        if self.cuda:
            kwargs.setdefault("devices", (self.device.index or 0,))
        else:
            kwargs.setdefault("workers", 1)
        return EngineOptions(device=self.device.type, **kwargs)


# -- helpers --------------------------------------------------------------------------------
def na(value: Any) -> Any:
    return "n/a" if value is None else value


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def compiled_flag(info: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether the compiled path ran: ``describe()["compiled"]``, else read from ``method``."""
    if "compiled" in info:
        return bool(info["compiled"]), "describe.compiled"
    if "method" in info:
        return str(info["method"]).endswith("compile"), "describe.method"
    return None, "n/a"


def max_rel_err(got: dict[str, Any], ref: dict[str, Any], key: str = "train_loss") -> float:
    import numpy as np

    return float(np.max(np.abs(got[key] - ref[key]) / np.maximum(np.abs(ref[key]), 1e-30)))


def max_abs_diff(got: dict[str, Any], ref: dict[str, Any], key: str = "train_acc") -> float:
    import numpy as np

    return float(np.max(np.abs(got[key] - ref[key])))


def acc_tolerance(precision: str, n_samples: int) -> float:
    return max(ACC_TOLERANCE[precision], 2.01 / n_samples)  # ≤ 2 flipped samples always


def make_net(name: str, in_channels: int, image_size: int, seed: int = 0) -> Any:
    """A zoo network with trained-looking BN statistics (so BN folding does real work)."""
    import torch

    from landscape.models import build

    torch.manual_seed(seed)
    model = build(name, in_channels=in_channels, num_classes=10, image_size=image_size)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) - 0.5)
                m.running_var.copy_(
                    0.5 + 1.5 * torch.rand(m.running_var.shape, generator=generator)
                )
    return model.eval()


def digits_setup(n: int, seed: int = 0) -> tuple[Any, list[Any], dict[str, Any]]:
    """resnet20 on ``n`` digits training samples, two filter-normalized random directions."""
    from landscape.data import load_dataset
    from landscape.directions import make_directions
    from landscape.specs import DirectionSpec

    model = make_net("resnet20", 1, 8, seed)
    x, y = load_dataset("digits", "train", size=n)
    dirs, _ = make_directions(model, DirectionSpec(seed=seed), 2)
    return model, dirs, {"train": (x, y)}


def coords(n: int, seed: int = 0) -> Any:
    """The centre, then ``n - 1`` points uniform in [-1, 1]²."""
    import numpy as np

    rest = np.random.default_rng(seed).uniform(-1, 1, size=(n - 1, 2))
    return np.vstack([np.zeros((1, 2)), rest])


def synchronize(ctx: Context) -> None:
    if ctx.cuda:
        import torch

        torch.cuda.synchronize(ctx.device)


def allocated(ctx: Context) -> int | None:
    if not ctx.cuda:
        return None
    import torch

    synchronize(ctx)
    return int(torch.cuda.memory_allocated(ctx.device))


def collect(ctx: Context) -> None:
    gc.collect()
    synchronize(ctx)


def forced_compile() -> tuple[Any, str]:
    """``"always"`` if ``EngineOptions(compile="always")`` constructs, else ``None`` and why."""
    from landscape.specs import EngineOptions

    try:
        EngineOptions(compile="always")  # type: ignore[arg-type]
    except Exception as exc:
        return None, f"EngineOptions(compile='always') refused: {exc}"[:200]
    return "always", ""


def dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    def count(group: str, key: str) -> int:
        return int(counters[group][key]) if group in counters else 0

    return {
        "frames": count("frames", "total"),  # frames dynamo compiled (first time or again)
        "graphs": count("stats", "unique_graphs"),
        "fx_cache_hits": count("inductor", "fxgraph_cache_hit"),
        "fx_cache_misses": count("inductor", "fxgraph_cache_miss"),
        # guard failures that compiled again (newer torch counts them here; else 0)
        "recompiles": int(sum(counters["recompiles"].values())) if "recompiles" in counters else 0,
    }


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def driver_version(index: int) -> str:
    """The NVIDIA driver: nvidia-smi, else /proc/driver/nvidia/version, else the CUDA driver
    API version (libcuda's cuDriverGetVersion)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
    with contextlib.suppress(OSError):
        text = Path("/proc/driver/nvidia/version").read_text()
        found = re.search(r"Kernel Module\s+(\S+)", text)
        if found:
            return found.group(1)
    with contextlib.suppress(Exception):
        import ctypes

        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return f"CUDA driver API {version.value // 1000}.{version.value % 1000 // 10}"
    return "n/a"


def evaluate_cell(
    ctx: Context, model: Any, dirs: list[Any], data: dict[str, Any], points: Any, **options: Any
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Values and ``describe()`` of one GridEvaluator over ``points``, and its seconds."""
    from landscape.engine.evaluator import GridEvaluator

    start = time.perf_counter()
    with GridEvaluator(
        model, dirs, data, options=ctx.options(**options), n_points=len(points)
    ) as ev:
        got = ev.evaluate(points)
        info = ev.describe()
    return got, info, time.perf_counter() - start


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


# -- c: the correctness grid -------------------------------------------------------------------
def step_correctness(ctx: Context) -> Result:
    from landscape.engine.reference import reference_evaluate

    model, dirs, data = digits_setup(ctx.sizes.digits)
    n = data["train"][0].shape[0]
    points = coords(6, seed=1)  # 6 = one group of K=4 and a padded one
    ref = reference_evaluate(model, dirs, points, data)
    always, always_why = forced_compile()
    result = Result(details={"samples": n, "points": len(points), "cells": {}})
    worst: dict[str, float] = {}
    n_compiled = n_forced = 0
    for precision in PRECISIONS:
        for mode in ("eager", "compile"):
            for k in (1, 4):
                label = f"{precision} {mode} K={k}"
                cell: dict[str, Any] = {"tolerance": TOLERANCE[precision]}
                result.details["cells"][label] = cell
                if precision != "fp32" and not ctx.cuda:
                    cell |= {"status": "skip", "why": "needs CUDA"}
                    result.rows.append((label, "skip", "needs CUDA"))
                    continue
                if mode == "compile" and always is None:
                    cell |= {"status": "skip", "why": always_why}
                    result.rows.append((label, "skip", always_why))
                    continue
                try:
                    got, info, seconds = evaluate_cell(
                        ctx,
                        model,
                        dirs,
                        data,
                        points,
                        precision=precision,
                        compile=always if mode == "compile" else False,
                        points_per_call=k,
                    )
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"[:300]
                    cell |= {"status": "fail", "why": why, "traceback": traceback.format_exc()}
                    result.rows.append((label, "fail", why))
                    continue
                err, acc = max_rel_err(got, ref), max_abs_diff(got, ref)
                compiled, source = compiled_flag(info)
                errors = info.get("compile_errors") or []
                status = "pass"
                notes = []
                if err > TOLERANCE[precision] or acc > acc_tolerance(precision, n):
                    status = "fail"
                if mode == "compile":
                    n_forced += 1
                    n_compiled += bool(compiled)
                    if errors:
                        status = "fail"
                        notes.append(f"compile fell back to eager: {str(errors[0])[:120]}")
                    elif not compiled:
                        reason = info.get("compile_reason") or "engine chose eager"
                        notes.append(f"NOT compiled ({str(reason)[:80]})")
                elif compiled:
                    status = "fail"
                    notes.append("compiled although compile=False")
                if info.get("points_per_call") not in (None, k):
                    notes.append(f"K={info.get('points_per_call')} used")
                worst[precision] = max(worst.get(precision, 0.0), err)
                cell |= {
                    "status": status,
                    "max_rel_err": err,
                    "max_acc_diff": acc,
                    "seconds": round(seconds, 2),
                    "compiled": compiled,
                    "compiled_from": source,
                    "compile_reason": na(info.get("compile_reason")),
                    "precision": na(info.get("precision")),
                    "points_per_call": na(info.get("points_per_call")),
                    "batch_size": na(info.get("batch_size")),
                    "compile_errors": errors,
                }
                text = (
                    f"rel err {err:.1e} (tol {TOLERANCE[precision]:.0e}), acc diff {acc:.3f}, "
                    f"compiled {na(compiled)}, {seconds:.1f} s"
                )
                result.rows.append((label, status, "; ".join([text, *notes])))
    statuses = [row[1] for row in result.rows]
    result.status = "fail" if "fail" in statuses else "pass" if "pass" in statuses else "skip"
    worst_text = ", ".join(f"{p} {e:.1e}" for p, e in worst.items())
    result.summary = (
        f"{statuses.count('pass')} pass, {statuses.count('fail')} fail, "
        f"{statuses.count('skip')} skip of {len(statuses)} cells; worst rel err {worst_text}; "
        f"forced compile compiled {n_compiled}/{n_forced}"
    )
    return result


# -- d: six evaluators in one process --------------------------------------------------------
def step_lifecycle(ctx: Context) -> Result:
    from landscape.engine.evaluator import GridEvaluator

    model, dirs, data = digits_setup(ctx.sizes.digits)
    points = coords(2, seed=2)
    # CUDA: forced compile (recompiles only count where something compiles); CPU: the
    # engine's choice (eager for so few points: six compiles would take CI a minute)
    always, _ = forced_compile()
    options = ctx.options(points_per_call=1, compile=(always or True) if ctx.cuda else True)
    collect(ctx)
    before = allocated(ctx)
    start_counts = dynamo_counts()
    first_counts = start_counts
    per: list[dict[str, Any]] = []
    for i in range(6):
        ev = GridEvaluator(model, dirs, data, options=options, n_points=ctx.sizes.lifecycle_points)
        try:
            ev.evaluate(points)
            info = ev.describe()
        finally:
            ev.close()
        held = allocated(ctx)
        del ev
        compiled, _ = compiled_flag(info)
        per.append(
            {
                "compiled": compiled,
                "held_after_close": held,
                "compile_s": info.get("timings", {}).get("compile_s"),
            }
        )
        if i == 0:
            first_counts = dynamo_counts()
    collect(ctx)
    after = allocated(ctx)
    end_counts = dynamo_counts()
    recompiles = end_counts["frames"] - first_counts["frames"]
    details = {
        "before": before,
        "after": after,
        "per_evaluator": per,
        "frames_compiled_after_first": recompiles,
        "dynamo_first": {k: first_counts[k] - start_counts[k] for k in start_counts},
        "dynamo_later_five": {k: end_counts[k] - first_counts[k] for k in start_counts},
        "recompile_limit": _recompile_limit(),
    }
    flags = {p["compiled"] for p in per}
    problems = []
    if len(flags) > 1:
        problems.append(f"compiled differs between evaluators: {[p['compiled'] for p in per]}")
    if before is not None and after is not None and after - before > MEMORY_SLACK:
        problems.append(f"{mib(after - before)} still allocated after closing")
    held_max = max((p["held_after_close"] or 0) - (before or 0) for p in per)
    memory = (
        f"CUDA allocated {mib(before)} → {mib(after)} (held after close, before gc: "
        f"max {mib(held_max)})"
        if ctx.cuda
        else "CUDA memory n/a on CPU"
    )
    n_compiled = sum(bool(p["compiled"]) for p in per)
    later = details["dynamo_later_five"]
    summary = (
        f"6 built+closed, compiled {n_compiled}/6; the later 5 compiled {recompiles} more frames "
        f"({later['graphs']} graphs, inductor cache hits {later['fx_cache_hits']}, dynamo "
        f"recompiles {later['recompiles']}); "
        f"{memory}"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    return Result("fail" if problems else "pass", summary, details=details)


def _recompile_limit() -> int | None:
    import torch._dynamo

    config = torch._dynamo.config
    return getattr(config, "recompile_limit", getattr(config, "cache_size_limit", None))


# -- e: host syncs per point -------------------------------------------------------------------
def step_host_syncs(ctx: Context) -> Result:
    import torch

    from landscape.engine.evaluator import GridEvaluator

    model, dirs, data = digits_setup(ctx.sizes.digits)
    chunks = [coords(ctx.sizes.sync_chunk, seed=s) for s in (3, 4, 5)]
    options = ctx.options()
    measured: int | None = None
    with GridEvaluator(
        model, dirs, data, options=options, n_points=ctx.sizes.lifecycle_points
    ) as ev:
        ev.evaluate(chunks[0])  # warm-up: allocator, cuDNN autotuning
        engine_before = ev.describe().get("host_syncs")
        timed = chunks[1:]
        if ctx.cuda and not ev.worker_pids():  # in-process: sync debug mode sees the engine
            with _count_syncs() as count:
                for chunk in timed:
                    ev.evaluate(chunk)
            measured = count[0]
        else:
            for chunk in timed:
                ev.evaluate(chunk)
        info = ev.describe()
    n_points = sum(len(c) for c in timed)
    engine_after = info.get("host_syncs")
    engine_per_point = (
        (float(engine_after) - float(engine_before or 0)) / n_points
        if isinstance(engine_after, int | float)
        else None
    )
    measured_per_point = None if measured is None else measured / n_points
    details = {
        "points": n_points,
        "points_per_call": na(info.get("points_per_call")),
        "engine_host_syncs": na(engine_after),
        "engine_per_point": na(engine_per_point),
        "measured_syncs": na(measured),
        "measured_per_point": na(measured_per_point),
        "compiled": compiled_flag(info)[0],
        "torch": torch.__version__,
    }
    if engine_per_point is None and measured_per_point is None:
        raise Skip(
            "describe() has no host_syncs (the engine predates it) and sync debug mode needs CUDA"
        )
    engine_text = "n/a (not in describe())" if engine_per_point is None else _per(engine_per_point)
    measured_text = "n/a (needs CUDA)" if measured_per_point is None else _per(measured_per_point)
    summary = (
        f"per point: engine {engine_text}, sync debug mode {measured_text}; "
        f"{n_points} points, K={na(info.get('points_per_call'))}"
    )
    return Result("pass", summary, details=details)


def _per(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@contextlib.contextmanager
def _count_syncs() -> Iterator[list[int]]:
    """Counts the synchronizing CUDA calls in the block (torch's sync debug mode, "warn")."""
    import torch

    count = [0]
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield count
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    count[0] = sum("synchroniz" in str(w.message) for w in caught)


# -- f: ResNet-56 × 50k: memory model and speed ------------------------------------------------
def step_resnet56(ctx: Context) -> Result:
    import torch

    from landscape.directions import make_directions
    from landscape.engine.evaluator import GridEvaluator
    from landscape.engine.plan import activation_bytes_per_sample
    from landscape.specs import DirectionSpec

    n = ctx.sizes.resnet56_samples
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    data = {"train": (x, y)}
    model = make_net("resnet56", 3, 32)
    dirs, _ = make_directions(model, DirectionSpec(seed=0), 2)
    points = coords(1 + ctx.sizes.timed_points, seed=6)
    per_sample = activation_bytes_per_sample(model, data)
    weights = sum(p.numel() * 4 for p in model.parameters())
    data_bytes = x.numel() * 4 + y.numel() * 8 + n  # fp32 inputs, int64 labels, bool mask
    grid = 51 * 51
    result = Result(
        details={
            "samples": n,
            "activation_bytes_per_sample": per_sample,
            "weights_bytes": weights,
            "data_bytes": data_bytes,
            "runs": {},
        }
    )
    values: dict[str, Any] = {}
    problems: list[str] = []
    for precision in ctx.sizes.speed_precisions:
        # CPU: compile off (compiling ResNet-56 on 2 cores alone would take minutes)
        options = ctx.options(precision=precision, **({} if ctx.cuda else {"compile": False}))
        collect(ctx)
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        base = allocated(ctx)
        start = time.perf_counter()
        ev = GridEvaluator(model, dirs, data, options=options, n_points=grid)
        try:
            prepare_s = time.perf_counter() - start
            start = time.perf_counter()
            # warm-up: allocator, cuDNN autotuning, and compile where the engine times eager
            # points first; what stays allocated after it is the evaluator's resident set
            ev.evaluate(points[:1])
            synchronize(ctx)
            warmup_s = time.perf_counter() - start
            after_prepare = allocated(ctx)
            peak_prepare = _peak(ctx)
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            start = time.perf_counter()
            values[precision] = ev.evaluate(points[1:])
            synchronize(ctx)
            s_per_point = (time.perf_counter() - start) / (len(points) - 1)
            peak_eval = _peak(ctx)
            info = ev.describe()
        finally:
            ev.close()
            del ev
        batch = info.get("batch_size")
        k = info.get("points_per_call") or 1
        compiled, _ = compiled_flag(info)
        run: dict[str, Any] = {
            "s_per_point": s_per_point,
            "prepare_s": prepare_s,
            "warmup_s": warmup_s,  # the first point, with any compile done on it
            "projected_51x51_min": (s_per_point * (grid - 1) + prepare_s + warmup_s) / 60,
            "compiled": compiled,
            "compile_reason": na(info.get("compile_reason")),
            "compile_errors": info.get("compile_errors") or [],
            "compile_s": info.get("timings", {}).get("compile_s"),
            "batch_size": na(batch),
            "points_per_call": k,
            "oom_retries": na(info.get("oom_retries")),
            "precision": na(info.get("precision")),
        }
        text = (
            f"{s_per_point:.3f} s/point, 51×51 {run['projected_51x51_min']:.1f} min, "
            f"compiled {na(compiled)}, K={k}, batch {na(batch)}, "
            f"oom_retries {na(info.get('oom_retries'))}"
        )
        status = "pass"
        if run["compile_errors"]:
            status = "fail"
            text += f"; compile fell back to eager: {str(run['compile_errors'][0])[:100]}"
        if ctx.cuda and isinstance(batch, int) and base is not None:
            resident = (after_prepare or 0) - base
            working = (peak_eval or 0) - (after_prepare or 0)
            # the engine's models (landscape.engine.plan): pick_batch_size budgets 16 ×
            # activation bytes per sample; max_points_per_call counts 4 live activations per
            # sample plus two copies of the weights per grid point
            budget = 16 * per_sample * batch * k
            k_model = k * (4 * per_sample * batch + 2 * weights)
            run |= {
                "resident_bytes": resident,
                "working_peak_bytes": working,
                "prepare_peak_bytes": (peak_prepare or 0) - base,  # set-up and first point
                "batch_budget_bytes": budget,
                "k_model_bytes": k_model,
                "working_vs_k_model": working / k_model,
            }
            text += (
                f"; memory: data+weights {gib(resident)} (expected ≥ {gib(data_bytes)}), "
                f"working peak {gib(working)} vs model {gib(k_model)} "
                f"({working / k_model:.2f}×), budget {gib(budget)}, "
                f"prepare peak {gib(run['prepare_peak_bytes'])}"
            )
            if working > budget:
                status = "fail"
                text += " — over the batch budget"
        elif not ctx.cuda:
            text += f"; memory model: {mib(4 * per_sample * (batch or 0) * k)} per call (n/a)"
        if status == "fail":
            problems.append(precision)
        result.details["runs"][precision] = run
        result.rows.append((precision, status, text))
    if "tf32" in values and "bf16" in values:
        result.details["bf16_vs_tf32_rel_err"] = max_rel_err(values["bf16"], values["tf32"])
    result.status = "fail" if problems else "pass"
    runs = result.details["runs"]
    speed = ", ".join(
        f"{p} {r['s_per_point']:.3f} s/pt ({r['projected_51x51_min']:.1f} min 51×51)"
        for p, r in runs.items()
    )
    first = next(iter(runs.values()))
    memory = (
        f"working peak {gib(first['working_peak_bytes'])} vs model {gib(first['k_model_bytes'])}"
        if "working_peak_bytes" in first
        else "measured memory n/a on CPU"
    )
    result.summary = f"{n} samples: {speed}; {memory}"
    return result


def _peak(ctx: Context) -> int | None:
    if not ctx.cuda:
        return None
    import torch

    return int(torch.cuda.max_memory_allocated(ctx.device))


# -- g: a surface end to end ------------------------------------------------------------------
def step_surface(ctx: Context) -> Result:
    import numpy as np

    from landscape import storage as store
    from landscape.engine.plan import resolve_precision
    from landscape.sources.checkpoint import save_checkpoint
    from landscape.specs import DataSpec, EngineOptions, GridSpec, SurfaceSpec
    from landscape.surface import compute_surface

    side = ctx.sizes.grid
    folder = ctx.tmp / "surface"
    folder.mkdir(parents=True, exist_ok=True)
    model = make_net("resnet20", 1, 8)
    args = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    checkpoint = save_checkpoint(
        folder / "resnet20-digits.pt",
        model,
        model_name="resnet20",
        model_args=args,
        metadata={"made_by": "scripts/gpu-check.py"},
    )
    train_size = None if ctx.cuda else ctx.sizes.digits
    spec = SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(name="digits", train_size=train_size),
        grid=GridSpec(n_x=side, n_y=side),
    )
    # the engine's defaults on this device (every core on CPU; the chosen GPU on CUDA)
    devices = {"devices": (ctx.device.index or 0,)} if ctx.cuda else {}
    runs: dict[str, dict[str, Any]] = {}
    surfaces = {}
    for label, extra in (("default", {}), ("compile=False", {"compile": False})):
        options = EngineOptions(device=ctx.device.type, **devices, **extra)
        out = folder / f"surface-{label.replace('=', '-')}.h5"
        start = time.perf_counter()
        compute_surface(spec, out, options=options)
        wall = time.perf_counter() - start
        surface = store.read_surface(out)
        surfaces[label] = surface
        engine = surface.attrs.get("engine") or {}
        runs[label] = {
            "wall_s": wall,
            "status": surface.status,
            "done": int(surface.done),
            "total": int(surface.total),
            "compiled": compiled_flag(engine)[0],
            "method": na(engine.get("method")),
            "workers": na(engine.get("workers")),
            "points_per_call": na(engine.get("points_per_call")),
            "compile_reason": na(engine.get("compile_reason")),
        }
    precision = resolve_precision(EngineOptions(device=ctx.device.type), ctx.device)
    a, b = surfaces["default"].values["train_loss"], surfaces["compile=False"].values["train_loss"]
    diff = float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))
    problems = [
        f"{k} {r['status']} {r['done']}/{r['total']}"
        for k, r in runs.items()
        if r["status"] != "complete" or r["done"] != r["total"]
    ]
    # both runs against the CPU reference loop are bounded by TOLERANCE: so is their difference
    if not diff <= 2 * TOLERANCE[precision]:
        problems.append(f"default vs compile=False differ by {diff:.1e}")
    d, e = runs["default"], runs["compile=False"]
    summary = (
        f"{side}×{side} {precision}: default {d['wall_s']:.1f} s (compiled {na(d['compiled'])}, "
        f"K={d['points_per_call']}, {d['workers']} worker(s)), compile=False {e['wall_s']:.1f} s; "
        f"max rel diff {diff:.1e}"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    details = {"grid": side, "precision": precision, "max_rel_diff": diff, "runs": runs}
    return Result("fail" if problems else "pass", summary, details=details)


# -- h: two workers, one killed --------------------------------------------------------------
def step_pool(ctx: Context) -> Result:
    from landscape.engine.evaluator import GridEvaluator
    from landscape.engine.plan import plan_worker_devices
    from landscape.engine.reference import reference_evaluate

    model, dirs, data = digits_setup(ctx.sizes.digits)
    n = data["train"][0].shape[0]
    chunks = [coords(3, seed=10 + i) for i in range(ctx.sizes.pool_chunks)]
    import numpy as np

    ref = reference_evaluate(model, dirs, np.vstack(chunks), data)
    options = ctx.options(workers=2, compile=False, precision="fp32")
    planned = plan_worker_devices(ctx.device, options)
    how = f"GridEvaluator, workers {planned}"
    pids: list[int] = []
    if len(planned) >= 2:
        with GridEvaluator(model, dirs, data, options=options, n_points=3 * len(chunks)) as ev:
            pids = ev.worker_pids()
            if len(pids) >= 2:
                got, victim = _kill_one_mid_run(lambda: ev.imap(chunks), pids[0])
                restarts = ev.describe().get("worker_restarts")
                alive = ev.worker_pids()
    if len(pids) < 2:  # one engine worker per GPU (workers= counts CPU processes): the pool
        how = (
            f"WorkerPool driven directly: the engine plans {planned} for workers=2, "
            f"devices={options.devices}"
        )
        got, victim, restarts, alive = _pool_directly(ctx, model, dirs, data, chunks)
    values = {key: np.concatenate([got[i][key] for i in range(len(chunks))]) for key in ref}
    err, acc = max_rel_err(values, ref), max_abs_diff(values, ref)
    problems = []
    if restarts != 1:
        problems.append(f"worker restarts {restarts}, expected 1")
    if victim in alive:
        problems.append(f"killed worker {victim} still listed")
    if err > TOLERANCE["fp32"] or acc > acc_tolerance("fp32", n):
        problems.append("values differ from the reference")
    summary = (
        f"2 workers on {ctx.device}, pid {victim} SIGKILLed after the first chunk; restarts "
        f"{na(restarts)}; {len(chunks)} chunks vs reference: rel err {err:.1e}, acc diff {acc:.3f}"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    details = {
        "how": how,
        "restarts": restarts,
        "victim": victim,
        "max_rel_err": err,
        "max_acc_diff": acc,
        "points": int(sum(len(c) for c in chunks)),
    }
    return Result("fail" if problems else "pass", summary, details=details)


def _kill_one_mid_run(
    imap: Callable[[], Iterator[tuple[int, dict[str, Any]]]], victim: int
) -> tuple[dict[int, dict[str, Any]], int]:
    got: dict[int, dict[str, Any]] = {}
    for index, values in imap():
        if not got:
            os.kill(victim, signal.SIGKILL)  # a real signal, mid-run
        got[index] = values
    return got, victim


def _pool_directly(
    ctx: Context, model: Any, dirs: list[Any], data: dict[str, Any], chunks: list[Any]
) -> tuple[dict[int, dict[str, Any]], int, int, list[int]]:
    """Two ``WorkerPool`` processes on this GPU, fed as ``GridEvaluator`` feeds them."""
    import torch

    from landscape.engine.point_evaluator import CoreConfig
    from landscape.engine.pool import WorkerPool

    try:
        from landscape.engine.batches import split_batches
    except ImportError:  # engines before landscape/engine/batches.py
        from landscape.engine.point_evaluator import split_batches  # type: ignore[no-redef]

    device = f"cuda:{ctx.device.index or 0}" if ctx.cuda else "cpu"
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    directions = [{name: d[name].detach().float() for name in params} for d in dirs]
    batch = 256
    batches = {
        s: split_batches(x, y, batch, torch.device("cpu"), True) for s, (x, y) in data.items()
    }
    config = CoreConfig(
        loss="cross_entropy",
        device=device,
        batch_size=batch,
        points_per_call=1,
        compile=False,
        channels_last=True,
        precision="fp32",
    )
    pool = WorkerPool([device, device])
    try:
        pool.load((model, params, directions, batches, config))
        pieces = ((i, c) for i, c in enumerate(chunks))
        got, victim = _kill_one_mid_run(
            lambda: ((task, values) for task, values, _ in pool.run(pieces)), pool.pids()[0]
        )
        return got, victim, pool.restarts, pool.pids()
    finally:
        pool.close(kill=True)


# -- driver ------------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Context], Result]] = {
    "a": step_versions,
    "b": step_gpu_tests,
    "c": step_correctness,
    "d": step_lifecycle,
    "e": step_host_syncs,
    "f": step_resnet56,
    "g": step_surface,
    "h": step_pool,
}


def progress(letter: str, r: Result) -> None:
    print(
        f"[gpu-check] {letter} {STEPS[letter]}: {r.status} ({r.seconds:.1f} s) {r.summary}",
        file=sys.stderr,
        flush=True,
    )


def join_gpu_tests(run: GpuTests) -> Result:
    """Step b's result once its background pytest is done (its seconds: the whole run)."""
    try:
        result = finish_gpu_tests(run)
    except Exception as exc:
        result = Result("fail", f"{type(exc).__name__}: {exc}"[:300],
                        details={"traceback": traceback.format_exc()})  # fmt: skip
    result.seconds = time.perf_counter() - run.started
    result.details["ran_beside_other_steps"] = True
    return result


def run_step(letter: str, ctx: Context) -> Result:
    start = time.perf_counter()
    try:
        result = RUNNERS[letter](ctx)
    except Skip as why:
        result = Result("skip", str(why))
    except Exception as exc:
        result = Result(
            "fail",
            f"{type(exc).__name__}: {exc}"[:300],
            details={"traceback": traceback.format_exc()},
        )
    result.seconds = time.perf_counter() - start
    return result


def table(results: dict[str, Result]) -> str:
    lines = [f"{'step':<22} {'status':<6} {'seconds':>7}  key numbers"]
    for letter, r in results.items():
        lines.append(
            f"{letter + ' ' + STEPS[letter]:<22} {r.status:<6} {r.seconds:>7.1f}  {r.summary}"
        )
        for label, status, text in r.rows:
            lines.append(f"  {letter}. {label:<17} {status:<6} {'':>7}  {text}")
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--gpu", type=int, default=0, help="which CUDA device (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "test-artifacts" / "gpu-check",
        help="folder for gpu-check.json and the logs",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(STEPS),
        metavar="STEP",
        help=f"run only these steps ({' '.join(STEPS)})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of this process (default: 1 with --device cpu, as each engine "
        "worker; two threads on a loaded 2-core machine ran 3-60x slower)",
    )
    parser.add_argument(
        "--pytest-timeout",
        type=int,
        default=None,
        help="seconds the GPU tests (b) may take (default 300 on CUDA)",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="run the GPU tests (b) alone, not beside steps c-e",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is false")
    kind = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = torch.device("cuda", args.gpu) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda" and args.gpu >= torch.cuda.device_count():
        parser.error(f"--gpu {args.gpu}: {torch.cuda.device_count()} CUDA device(s) visible")
    args.out.mkdir(parents=True, exist_ok=True)
    if kind == "cuda":
        torch.cuda.set_device(device)
    if args.threads or kind == "cpu":
        torch.set_num_threads(args.threads or 1)
    selected = set(args.only or STEPS)
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(
            args, device, CUDA_SIZES if kind == "cuda" else CPU_SIZES, args.out, Path(tmp)
        )
        background: GpuTests | None = None
        try:
            for letter, name in STEPS.items():
                if letter not in selected:
                    results[letter] = Result("skip", "not selected (--only)")
                    continue
                if background is not None and letter in "fgh":  # they time: b must be done
                    results["b"] = join_gpu_tests(background)
                    progress("b", results["b"])
                    background = None
                beside = [s for s in "cde" if s in selected]
                if letter == "b" and ctx.cuda and beside and not args.serial:
                    print(
                        f"[gpu-check] b {name}: started beside {' '.join(beside)}", file=sys.stderr
                    )
                    try:
                        background = start_gpu_tests(ctx)
                    except Exception:
                        results["b"] = run_step("b", ctx)  # the same error or skip, reported
                        progress("b", results["b"])
                    continue
                print(f"[gpu-check] {letter} {name} …", file=sys.stderr, flush=True)
                results[letter] = run_step(letter, ctx)
                progress(letter, results[letter])
            if background is not None:
                results["b"] = join_gpu_tests(background)
                progress("b", results["b"])
                background = None
        finally:
            if background is not None and background.proc.poll() is None:  # interrupted
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(background.proc.pid, signal.SIGKILL)
    results = {letter: results[letter] for letter in STEPS}
    wall = time.perf_counter() - started
    failed = [letter for letter, r in results.items() if r.status == "fail"]
    text = table(results)
    verdict = f"{'FAIL: ' + ' '.join(failed) if failed else 'ok'} — {wall:.0f} s on {device}"
    print(text)
    print(verdict)
    report = {
        "device": str(device),
        "argv": sys.argv[1:] if argv is None else argv,
        "wall_s": wall,
        "ok": not failed,
        "failed": failed,
        "tolerance": TOLERANCE,
        "steps": {
            letter: {
                "name": STEPS[letter],
                "status": r.status,
                "summary": r.summary,
                "seconds": r.seconds,
                "details": r.details,
                "rows": [{"label": a, "status": b, "text": c} for a, b, c in r.rows],
            }
            for letter, r in results.items()
        },
    }
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=jsonable))
    (args.out / "gpu-check.txt").write_text(text + "\n" + verdict + "\n")
    print(f"JSON: {args.out / 'gpu-check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
