"""One progress bar for commands that count steps (hessian, gradient-flow, reproduce)."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class StepProgress(Protocol):
    def __call__(self, done: int, total: int, what: str | None = None) -> None: ...


def step_bar(quiet: bool, desc: str) -> StepProgress:
    """``on_progress(done, total, what=None)`` drawing a tqdm bar on stderr (nothing when
    ``quiet``); ``what`` names the running step beside the bar. tqdm is imported on the
    first call, so a quiet or instant command never pays for it."""
    bar: Any = None

    def on_progress(done: int, total: int, what: str | None = None) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="step", desc=desc, file=sys.stderr)
        if what is not None:
            bar.set_postfix_str(what)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return on_progress
