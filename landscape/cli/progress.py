"""The CLI's progress bars: tqdm on a terminal; on a file or pipe, a whole line every few
seconds, since tqdm's carriage-return redraws land in a log as one entry per step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

PIPE_INTERVAL_S = 5.0  # seconds between two lines of a bar written to a file or pipe


class StepProgress(Protocol):
    def __call__(self, done: int, total: int, what: str | None = None) -> None: ...


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class LineBar:
    """The part of tqdm's interface the commands use, writing a line at most every
    ``interval`` seconds and the bar's last state once, when it closes."""

    def __init__(
        self,
        total: float,
        desc: str,
        *,
        unit: str = "it",
        initial: float = 0,
        file: IO[str] | None = None,
        counts: bool = True,
        interval: float = PIPE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._file = file if file is not None else sys.stderr
        self._counts, self._interval, self._clock = counts, interval, clock
        self._start = self._last_time = clock()
        self._initial = initial
        self._postfix = ""
        self._last_line: str | None = None
        self._closed = False

    def line(self) -> str:
        """``desc:  40% 32/81 pt [00:03<00:04], postfix``: what a log reader wants to see."""
        elapsed = self._clock() - self._start
        fraction = self.n / self.total if self.total else 1.0
        counted = f" {self.n:g}/{self.total:g} {self.unit}" if self._counts else ""
        rate_done = self.n - self._initial
        left = "?"
        if rate_done > 0 and elapsed > 0:
            left = _clock_text((self.total - self.n) * elapsed / rate_done)
        postfix = f", {self._postfix}" if self._postfix else ""
        return (
            f"{self.desc}: {100 * fraction:3.0f}%{counted} [{_clock_text(elapsed)}<{left}]{postfix}"
        )

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        self._last_line, self._last_time = line, self._clock()

    def _maybe_write(self) -> None:
        # the finished state is left to close(), so it is written exactly once
        if self._closed or self.n >= self.total:
            return
        if self._clock() - self._last_time >= self._interval:
            self._write(self.line())

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_write()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text
        if refresh:
            self._maybe_write()

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{key}={value}" for key, value in values.items()))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._last_line is None and self.n == self._initial:
            return  # nothing happened (an error before the first step): no line at all
        line = self.line()
        if self._last_line is None or line.split(" [")[0] != self._last_line.split(" [")[0]:
            self._write(line)

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bar(
    total: float,
    desc: str,
    *,
    unit: str = "it",
    initial: float = 0,
    counts: bool = True,
    **terminal_options: Any,
) -> Any:
    """A tqdm bar on stderr when it is a terminal (``terminal_options`` go to tqdm), else a
    ``LineBar``; ``counts=False`` leaves ``n/total`` out (a bar that moves by cost)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(
            total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
            **terminal_options,
        )  # fmt: skip
    return LineBar(total, desc, unit=unit, initial=initial, counts=counts)


def step_bar(quiet: bool, desc: str, weights: Sequence[float] | None = None) -> StepProgress:
    """``on_progress(done, total, what=None)`` drawing a bar on stderr (nothing when
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
            bar = open_bar(
                size, desc, counts=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
            )  # fmt: skip
        postfix = f"step {done}/{total}"
        bar.set_postfix_str(f"{postfix}, {what}" if what is not None else postfix, refresh=False)
        bar.update(position - bar.n)
        if done == total:
            bar.close()

    return on_progress
