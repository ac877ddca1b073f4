"""Step j: many small BN-folded surfaces in one process, as a long-lived service worker computes
them. Each BN-folded model is a module of its own to torch.compile; the step shows whether the
last surface still ran compiled and whether the compiled graphs stop growing."""

from __future__ import annotations

import time
from typing import Any

from scripts.gpu_check.common import (
    Context,
    Result,
    Skip,
    compiled_flag,
    dynamo_counts,
    forced_compile,
    trained_looking_bn,
)

GRID = 3  # 3×3 points per surface
TRAIN, TEST = 256, 128  # digits samples: two splits, as the service's surfaces have


def tiny_resnet(seed: int) -> Any:
    """ResNet-8 (one block per stage, 8/16/16 channels) on 8×8 digits: every surface the same
    architecture, its own weights and BN statistics."""
    import torch

    from landscape.models.resnet import CifarResNet

    torch.manual_seed(seed)
    net = CifarResNet(8, in_channels=1, num_classes=10, widths=(8, 16, 16))
    return trained_looking_bn(net, seed + 1)


def engine_counts(engine: dict[str, Any]) -> dict[str, Any]:
    """What the engine says about sharing compiled graphs, where it says anything: keys of the
    surface's provenance naming graphs, reuse or architectures, and how many architectures
    the process keeps compiled (``landscape.engine.shared_graphs``, in engines that have it)."""
    out = {
        key: value
        for key, value in engine.items()
        if any(word in key for word in ("graph", "reuse", "architecture"))
    }
    try:
        from landscape.engine.shared_graphs import cached_architectures
    except ImportError:
        return out
    return {**out, "cached_architectures": cached_architectures()}


def judge(per: list[dict[str, Any]], wanted: int, budget_s: float) -> list[str]:
    """What is wrong with a long-lived run: surfaces missing, not finite or incomplete, the last
    one eager, or graphs still being added in the second half of the run (a bounded cache
    stops adding them after the first surfaces of an architecture)."""
    problems = []
    if len(per) < wanted:
        problems.append(f"only {len(per)} of {wanted} surfaces within the {budget_s:.0f} s budget")
    bad = [p["surface"] for p in per if p["status"] != "complete" or not p["finite"]]
    if bad:
        problems.append(f"surfaces {bad} incomplete or not finite")
    if per and not per[-1]["compiled"]:
        last = per[-1]
        why = (last["compile_errors"] or [last["compile_reason"]])[0]
        problems.append(f"surface {last['surface']} ran eager: {str(why)[:160]}")
    if len(per) >= 2:
        tail = per[len(per) // 2 :]
        added = sum(p["new_graphs"] for p in tail)
        if added:
            problems.append(
                f"the last {len(tail)} surfaces added {added} compiled graphs "
                f"({per[-1]['graphs']} in all): one more with every surface"
            )
    return problems


def step_long_lived(ctx: Context) -> Result:
    import numpy as np

    from landscape import storage as store
    from landscape.data import load_dataset
    from landscape.specs import DirectionSpec, GridSpec
    from landscape.surface import compute_module_surface

    wanted = ctx.args.long_lived_surfaces
    budget = ctx.args.long_lived_budget
    always, why = forced_compile()
    if always is None:
        raise Skip(why)
    data = {
        "train": load_dataset("digits", "train", size=TRAIN),
        "test": load_dataset("digits", "test", size=TEST),
    }
    # one GPU (or one CPU process): the engine evaluates in this process, which compiles
    options = ctx.options(compile=always)
    folder = ctx.tmp / "long-lived"
    folder.mkdir(parents=True, exist_ok=True)
    start_counts = dynamo_counts()
    started = time.perf_counter()
    per: list[dict[str, Any]] = []
    for i in range(wanted):
        before = dynamo_counts()
        t0 = time.perf_counter()
        path = compute_module_surface(
            tiny_resnet(seed=i), data, folder / f"surface-{i + 1}.h5",
            grid=GridSpec(n_x=GRID, n_y=GRID), directions=DirectionSpec(seed=i), options=options,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        surface = store.read_surface(path)
        after = dynamo_counts()
        engine = surface.attrs.get("engine") or {}
        values = [np.asarray(v, dtype=float) for v in surface.values.values()]
        per.append(
            {
                "surface": i + 1,
                "seconds": round(seconds, 2),
                "status": surface.status,
                "finite": all(bool(np.isfinite(v).all()) for v in values),
                "compiled": bool(compiled_flag(engine)[0]),
                "compile_reason": engine.get("compile_reason"),
                "compile_errors": engine.get("compile_errors") or [],
                "bn_folded": engine.get("bn_folded"),
                "new_graphs": after["graphs"] - before["graphs"],
                "graphs": after["graphs"] - start_counts["graphs"],
                "frames": after["frames"] - start_counts["frames"],
                "fx_cache_hits": after["fx_cache_hits"] - start_counts["fx_cache_hits"],
                "recompiles": after["recompiles"] - start_counts["recompiles"],
                "engine": engine_counts(engine),
            }
        )
        if time.perf_counter() - started > budget:
            break
    problems = judge(per, wanted, budget)
    n_compiled = sum(p["compiled"] for p in per)
    graphs = [p["graphs"] for p in per]
    seconds = [p["seconds"] for p in per]
    later = sorted(seconds[1:] or seconds)
    last = "compiled" if per[-1]["compiled"] else "EAGER"
    reused = [p["engine"]["compile_reused"] for p in per if "compile_reused" in p["engine"]]
    summary = (
        f"{len(per)} BN-folded {GRID}×{GRID} surfaces (ResNet-8, {TRAIN}+{TEST} digits), "
        f"compiled {n_compiled}/{len(per)}, last {last}; compiled graphs after 1 / half / all: "
        f"{graphs[0]} / {graphs[(len(graphs) - 1) // 2]} / {graphs[-1]}"
        + (f", reused by {sum(map(bool, reused))}/{len(reused)}" if reused else "")
        + f"; first {seconds[0]:.1f} s, later median {later[len(later) // 2]:.1f} s"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    details = {
        "wanted": wanted,
        "budget_s": budget,
        "rule": "fails if a surface is missing, incomplete or not finite, the last ran eager, "
        "or the second half of the surfaces added compiled graphs",
        "per_surface": per,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    return Result("fail" if problems else "pass", summary, details=details)
