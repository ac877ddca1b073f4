"""Steps f to h: ResNet-56 on 50,000 CIFAR-shaped samples, a resnet20 surface end to end, a
worker pool with a killed worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from scripts.gpu_check.common import (
    TOLERANCE,
    Context,
    Result,
    acc_tolerance,
    allocated,
    collect,
    compiled_flag,
    coords,
    digits_setup,
    gib,
    make_net,
    max_abs_diff,
    max_rel_err,
    mib,
    na,
    synchronize,
)


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
    from landscape.losses import resolve_loss

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
        loss=resolve_loss("cross_entropy"),
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
