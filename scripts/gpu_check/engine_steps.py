"""Steps c to e: the precision × compile × K correctness grid, six evaluators' lifecycle,
host syncs per point."""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

from scripts.gpu_check.common import (
    MEMORY_SLACK,
    PRECISIONS,
    TOLERANCE,
    Context,
    Result,
    Skip,
    acc_tolerance,
    allocated,
    collect,
    compiled_flag,
    coords,
    digits_setup,
    dynamo_counts,
    evaluate_cell,
    forced_compile,
    max_abs_diff,
    max_rel_err,
    mib,
    na,
)


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
