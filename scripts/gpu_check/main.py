"""Running the steps in order: a JSON line as each ends, the table and the JSON at the end."""

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
from collections.abc import Callable
from pathlib import Path
from types import FrameType
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
from scripts.gpu_check.engine_steps import step_correctness, step_host_syncs, step_lifecycle
from scripts.gpu_check.long_lived import step_long_lived
from scripts.gpu_check.probes import (
    GpuTests,
    finish_gpu_tests,
    start_gpu_tests,
    step_gpu_tests,
    step_versions,
)
from scripts.gpu_check.records import Journal, jsonable, now, step_warnings, versions_record
from scripts.gpu_check.service import step_service
from scripts.gpu_check.workloads import step_pool, step_resnet56, step_surface

RUNNERS: dict[str, Callable[[Context], Result]] = {
    "a": step_versions,
    "b": step_gpu_tests,
    "c": step_correctness,
    "d": step_lifecycle,
    "e": step_host_syncs,
    "f": step_resnet56,
    "g": step_surface,
    "h": step_pool,
    "i": step_service,
    "j": step_long_lived,
}


class Interrupted(BaseException):
    """SIGTERM (a time limit's ``timeout``, ``docker stop``): the step running is recorded as
    interrupted and the report written; BaseException, so no step's ``except Exception``
    swallows it."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


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
    """One step, its exceptions and skips turned into a result, with the warnings it raised;
    a signal that stopped it is named in ``details["interrupted"]``."""
    start = time.perf_counter()
    with step_warnings() as found:
        try:
            result = RUNNERS[letter](ctx)
        except Skip as why:
            result = Result("skip", str(why))
        except Interrupted as signal_name:
            result = Result(
                "fail",
                f"interrupted by {signal_name} after {time.perf_counter() - start:.0f} s",
                details={"interrupted": str(signal_name)},
            )
        except Exception as exc:
            result = Result(
                "fail",
                f"{type(exc).__name__}: {exc}"[:300],
                details={"traceback": traceback.format_exc()},
            )
    result.seconds = time.perf_counter() - start
    result.warnings = found
    return result


def step_record(letter: str, r: Result) -> dict[str, Any]:
    return {
        "record": "step",
        "step": letter,
        "name": STEPS[letter],
        "status": r.status,
        "summary": r.summary,
        "seconds": r.seconds,
        "time": now(),
        "warnings": r.warnings,
        "details": r.details,
        "rows": [{"label": a, "status": b, "text": c} for a, b, c in r.rows],
    }


def table(results: dict[str, Result]) -> str:
    lines = [f"{'step':<22} {'status':<6} {'seconds':>7}  key numbers"]
    for letter, r in results.items():
        lines.append(
            f"{letter + ' ' + STEPS[letter]:<22} {r.status:<6} {r.seconds:>7.1f}  {r.summary}"
        )
        for label, status, text in r.rows:
            lines.append(f"  {letter}. {label:<17} {status:<6} {'':>7}  {text}")
    return "\n".join(lines)


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--gpu", type=int, default=0, help="which CUDA device (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "test-artifacts" / "gpu-check",
        help="folder for gpu-check.jsonl, gpu-check.json and the logs",
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
    parser.add_argument(
        "--long-lived-surfaces",
        type=positive(int),
        default=40,
        metavar="N",
        help="surfaces the long-lived worker (j) computes in one process (default 40)",
    )
    parser.add_argument(
        "--long-lived-budget",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="step j stops (and fails) when its surfaces take longer (default 300)",
    )
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
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
    threads = torch.get_num_threads()
    if args.threads or kind == "cpu":
        torch.set_num_threads(args.threads or 1)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            sizes = CUDA_SIZES if kind == "cuda" else CPU_SIZES
            ctx = Context(args, device, sizes, args.out, Path(tmp))
            journal = Journal(args.out / "gpu-check.jsonl")
            versions = versions_record(ctx)
            journal.write(versions)
            results = run_steps(ctx, set(args.only or STEPS), journal)
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
    wall = time.perf_counter() - started
    failed = [letter for letter, r in results.items() if r.status == "fail"]
    text = table(results)
    verdict = f"{'FAIL: ' + ' '.join(failed) if failed else 'ok'} — {wall:.0f} s on {device}"
    journal.write(
        {"record": "summary", "time": now(), "ok": not failed, "failed": failed, "wall_s": wall,
         "statuses": {letter: r.status for letter, r in results.items()}}
    )  # fmt: skip
    print(text)
    print(verdict)
    report = {
        "device": str(device),
        "argv": sys.argv[1:] if argv is None else argv,
        "wall_s": wall,
        "ok": not failed,
        "failed": failed,
        "tolerance": TOLERANCE,
        "versions": versions,
        "steps": {letter: step_record(letter, r) for letter, r in results.items()},
    }
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=jsonable))
    (args.out / "gpu-check.txt").write_text(text + "\n" + verdict + "\n")
    print(f"JSON: {args.out / 'gpu-check.json'} (each step as it ended: {journal.path.name})")
    return 1 if failed else 0


def run_steps(ctx: Context, selected: set[str], journal: Journal) -> dict[str, Result]:
    """Every step in order (b in the background beside c-e on CUDA), each one's line written
    as it ends; after a SIGTERM the steps not yet run are skipped."""
    results: dict[str, Result] = {}

    def finished(letter: str, result: Result) -> None:
        results[letter] = result
        progress(letter, result)
        journal.write(step_record(letter, result))

    background: GpuTests | None = None
    stopped: str | None = None
    try:
        for letter, name in STEPS.items():
            if letter not in selected:
                results[letter] = Result("skip", "not selected (--only)")
                continue
            if background is not None and letter in "fghij":  # they time: b must be done
                finished("b", join_gpu_tests(background))
                background = None
            beside = [s for s in "cde" if s in selected]
            if letter == "b" and ctx.cuda and beside and not ctx.args.serial:
                print(f"[gpu-check] b {name}: started beside {' '.join(beside)}", file=sys.stderr)
                try:
                    background = start_gpu_tests(ctx)
                except Exception:
                    finished("b", run_step("b", ctx))  # the same error or skip, reported
                continue
            print(f"[gpu-check] {letter} {name} …", file=sys.stderr, flush=True)
            finished(letter, run_step(letter, ctx))
            stopped = results[letter].details.get("interrupted")
            if stopped:
                break
        if background is not None and not stopped:
            finished("b", join_gpu_tests(background))
            background = None
    except Interrupted as signal_name:  # between steps, or while waiting for b
        stopped = str(signal_name)
    finally:
        if background is not None and background.proc.poll() is None:  # interrupted
            with contextlib.suppress(ProcessLookupError):
                os.killpg(background.proc.pid, signal.SIGKILL)
    for letter in STEPS:
        if letter not in results:
            results[letter] = Result("skip", f"not run: interrupted by {stopped}")
    return {letter: results[letter] for letter in STEPS}
