"""One progress bar for commands that count steps (hessian, gradient-flow, reproduce)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol


class StepProgress(Protocol):
    def __call__(self, done: int, total: int, what: str | None = None) -> None: ...


def step_bar(quiet: bool, desc: str, weights: Sequence[float] | None = None) -> StepProgress:
    """``on_progress(done, total, what=None)`` drawing a tqdm bar on stderr (nothing when
    ``quiet``); ``what`` names the running step beside the bar. With ``weights`` (one per
    step: its estimated cost), the bar and its ETA move by cost, not by count, so one
    expensive step does not make the rest look instant. tqdm is imported on the first call,
    so a quiet or instant command never pays for it."""
    bar: Any = None

    def on_progress(done: int, total: int, what: str | None = None) -> None:
        nonlocal bar
        if quiet:
            return
        weighted = weights is not None and len(weights) == total
        position = float(sum(weights[:done])) if weighted and weights else float(done)
        size = float(sum(weights)) if weighted and weights else float(total)
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(
                total=size,
                desc=desc,
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
            )
        postfix = f"step {done}/{total}"
        bar.set_postfix_str(f"{postfix}, {what}" if what is not None else postfix)
        bar.update(position - bar.n)
        if done == total:
            bar.close()

    return on_progress
