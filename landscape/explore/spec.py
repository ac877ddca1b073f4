"""What an estimated surface is asked for: a target error per point, a permutation seed, a
method. Plain values, so it is stored as JSON in the file and enters the cache key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from landscape.errors import SpecError

Method = Literal["fitted", "difference"]
METHODS: tuple[Method, ...] = ("fitted", "difference")
DEFAULT_FIRST_STAGE = 256
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class EstimateSpec:
    """Sample each point until its 95 % interval's half-width is within ``target``.

    ``relative``: ``target`` is a fraction of the point's |loss| (``0.05`` for ``5%``), else an
    absolute loss. ``seed`` fixes the one permutation of each split that every point shares.
    """

    target: float = 0.05
    relative: bool = True
    seed: int = 0
    method: Method = "fitted"
    first_stage: int = DEFAULT_FIRST_STAGE
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if not (isinstance(self.target, int | float) and math.isfinite(self.target)):
            raise SpecError(f"estimate target must be a number, got {self.target!r}")
        if self.target <= 0 or (self.relative and self.target >= 1):
            what = "between 0 % and 100 % (exclusive)" if self.relative else "above 0"
            shown = f"{self.target * 100:g}%" if self.relative else f"{self.target:g}"
            raise SpecError(f"estimate target must be {what}, got {shown}")
        if self.method not in METHODS:
            raise SpecError(
                f"estimate method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.first_stage < 2:
            raise SpecError(f"first_stage must be at least 2 samples, got {self.first_stage}")
        if not 0 < self.level < 1:
            raise SpecError(f"interval level must be between 0 and 1, got {self.level}")

    def describe(self) -> str:
        """``±5 %`` or ``±0.01``: the target as a person reads it."""
        return f"±{self.target * 100:g} %" if self.relative else f"±{self.target:g}"


def parse_target(text: str, *, seed: int = 0, method: Method = "fitted") -> EstimateSpec:
    """``"5%"`` → relative 0.05; ``"0.01"`` → absolute 0.01 (the CLI's and the API's words)."""
    raw = text.strip()
    relative = raw.endswith("%")
    number = raw[:-1].strip() if relative else raw
    try:
        value = float(number)
    except ValueError:
        raise SpecError(
            f"estimate target must be a percentage like 5% or an absolute loss like 0.01, "
            f"got {text!r}"
        ) from None
    return EstimateSpec(
        target=value / 100 if relative else value, relative=relative, seed=seed, method=method
    )
