"""Running the steps in order, the table and the JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from scripts.gpu_check.common import (
    CPU_SIZES,
    CUDA_SIZES,
    ROOT,
    STEPS,
    TOLERANCE,
    Context,
    Result,
    Skip,
)
from scripts.gpu_check.probes import GpuTests, finish_gpu_tests, start_gpu_tests
from scripts.gpu_check.workloads import RUNNERS


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
