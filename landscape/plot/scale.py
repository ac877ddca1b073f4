"""The scale rules of a drawn surface, read from ``figure.js`` so Python figures and the page
cannot drift apart.

``figure.js`` is the one definition: the web page imports it and the HTML export embeds it
verbatim, so it has to stay a plain ES module and cannot import a shared JSON file. This module
parses its numbers (``LOSS_CAP``, ``LOG_DECADES``, ``CAPPED_COLOR``, ``VIRIDIS``) once, at
import, and implements ``scaleFor``, ``valueTitle``, ``colorscale`` and ``capNote`` with the
same semantics; ``tests/plot/test_scale.py`` runs both on the same cases with Node.

No plotly here (it takes seconds to import): the VTP export and the API use this too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.errors import SpecError, UnknownNameError

if TYPE_CHECKING:
    from landscape.storage import Surface

FIGURE_JS = Path(__file__).resolve().parent / "figure.js"

__all__ = [
    "CAPPED_COLOR",
    "FIGURE_JS",
    "LOG_DECADES",
    "LOSS_CAP",
    "VIRIDIS",
    "Scale",
    "cap_note",
    "clamp_display",
    "colorscale",
    "decade_ticks",
    "is_loss",
    "log10_values",
    "metric_label",
    "metric_values",
    "scale_for",
    "short",
    "to_display",
    "value_title",
]


class FigureJsError(RuntimeError):
    """figure.js lost a constant this module reads: a packaging or editing bug, not user input."""


def _js_constant(source: str, name: str) -> Any:
    """The JSON-compatible literal of ``export const NAME = ...;`` in figure.js."""
    match = re.search(rf"^export const {name} = (.+?);\s*$", source, re.MULTILINE | re.DOTALL)
    if match is None:
        raise FigureJsError(
            f"{FIGURE_JS} has no `export const {name} = ...;` line; landscape/plot/scale.py "
            "reads the figure's scale rules from it (keep the constant exported there)"
        )
    literal = re.sub(r",(\s*[\]}])", r"\1", match.group(1))  # JS allows trailing commas
    try:
        return json.loads(literal)
    except json.JSONDecodeError as error:
        raise FigureJsError(
            f"{FIGURE_JS}: {name} = {match.group(1)!r} is not a plain literal ({error})"
        ) from error


def _js_number(source: str, name: str) -> float:
    value = _js_constant(source, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FigureJsError(f"{FIGURE_JS}: {name} should be a number, not {value!r}")
    return float(value)


def _read_constants() -> tuple[float, float, str, tuple[tuple[int, int, int], ...]]:
    source = FIGURE_JS.read_text(encoding="utf-8")
    color = _js_constant(source, "CAPPED_COLOR")
    viridis = _js_constant(source, "VIRIDIS")
    if not isinstance(color, str):
        raise FigureJsError(f"{FIGURE_JS}: CAPPED_COLOR should be a string, not {color!r}")
    if not (isinstance(viridis, list) and all(len(c) == 3 for c in viridis)):
        raise FigureJsError(f"{FIGURE_JS}: VIRIDIS should be a list of [r, g, b]")
    stops = tuple((int(r), int(g), int(b)) for r, g, b in viridis)
    return _js_number(source, "LOSS_CAP"), _js_number(source, "LOG_DECADES"), color, stops


LOSS_CAP, LOG_DECADES, CAPPED_COLOR, VIRIDIS = _read_constants()


def _js_str(value: float) -> str:
    """A number as JS's ``String(v)`` writes it in the range used here: ``10``, not ``10.0``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Scale:
    """How to draw a metric (figure.js's ``scaleFor`` result).

    ``range`` is in display units (log10 of the values on a log scale), either end None when
    there is nothing to draw; ``capped``: linear losses above ``LOSS_CAP`` are drawn at the cap;
    ``min``/``max``: the true extent in data units, so the figure can say what the cap hides.
    """

    log: bool
    range: tuple[float | None, float | None]
    capped: bool
    min: float | None
    max: float | None


def is_loss(metric: str) -> bool:
    """Losses get the cap and the automatic log scale; accuracies live in [0, 1] and do not."""
    return metric.endswith("_loss")


def metric_values(surface: Surface, metric: str) -> np.ndarray:
    """The values of ``metric``, or the error naming the metrics the surface has."""
    if metric not in surface.values:
        raise UnknownNameError("metric", metric, list(surface.values))
    return surface.values[metric]


def log10_values(values: np.ndarray, metric: str) -> np.ndarray:
    """log10 of a metric for a log scale the user asked for; values <= 0 are an error (the
    page would silently drop them, but a forced log over them hides data, so Python says so)."""
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise SpecError(
            f"cannot use a log scale for {metric!r}: it has values <= 0 "
            f"(min {float(finite.min()):.3g})"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        logged: np.ndarray = np.log10(values)
    return logged


def to_display(values: Any, log: bool) -> np.ndarray:
    """Values in display units as floats: log10 of the positive ones (others become NaN gaps)
    on a log scale, else the values (None becomes NaN) -- figure.js's ``toDisplay``."""
    array = np.asarray(values, dtype=float)
    if not log:
        return array
    with np.errstate(invalid="ignore", divide="ignore"):
        shown: np.ndarray = np.where(array > 0, np.log10(np.where(array > 0, array, 1.0)), np.nan)
    return shown


def _extent(arrays: Iterable[np.ndarray]) -> tuple[float, float] | None:
    """[min, max] of the finite numbers, or None when there are none (figure.js's ``extent``)."""
    low, high = math.inf, -math.inf
    for array in arrays:
        finite = array[np.isfinite(array)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return (low, high) if low <= high else None


def _values_of(item: Any, metric: str) -> Any:
    """The metric's values of a surface, an API-shaped dict (``{"values": {...}}``, what the
    page gets) or an array itself; None when the surface lacks the metric (then skipped)."""
    if item is None or isinstance(item, np.ndarray | list | tuple):
        return item
    values = item.get("values") if isinstance(item, Mapping) else getattr(item, "values", None)
    return values.get(metric) if isinstance(values, Mapping) else None


def _range_to_display(value: float | None, log: bool) -> float | None:
    if not log or value is None:
        return value
    return math.log10(value) if value > 0 else None


def scale_for(
    surfaces_or_value_arrays: Iterable[Any],
    metric: str,
    *,
    log: bool | None = None,
    range: tuple[float | None, float | None] = (None, None),  # figure.js's name for it
) -> Scale:
    """How to draw ``metric`` of one or more surfaces (compared surfaces share one scale).

    ``log``: None picks a log scale for losses whose finite values are all positive and span
    ``LOG_DECADES`` decades or more; True/False force it. ``range``: the user's [low, high] in
    data units, None ends automatic. A linear loss view without a user top clamps at
    ``LOSS_CAP``: far from the minimum losses reach 1e8 and flatten everything else.
    """
    arrays = [
        np.asarray(values, dtype=float)
        for item in surfaces_or_value_arrays
        if (values := _values_of(item, metric)) is not None
    ]
    raw = _extent(arrays)
    positive = raw is not None and raw[0] > 0
    if log is None:
        log = bool(
            is_loss(metric)
            and positive
            and raw is not None
            and math.log10(raw[1] / raw[0]) >= LOG_DECADES
        )
    shown = _extent(to_display(a, log) for a in arrays)
    user_low, user_high = (_range_to_display(v, log) for v in range)
    low = user_low if user_low is not None else shown[0] if shown else None
    high = user_high if user_high is not None else shown[1] if shown else None
    capped = False
    if not log and is_loss(metric) and user_high is None and shown and shown[1] > LOSS_CAP:
        capped = True
        high = max(LOSS_CAP, low if low is not None else -math.inf)
        if low is not None and low > high:
            low = high
    return Scale(
        log=log,
        range=(low, high),
        capped=capped,
        min=raw[0] if raw else None,
        max=raw[1] if raw else None,
    )


def clamp_display(values: Any, scale: Scale) -> np.ndarray:
    """What the figure draws: display units clamped to the scale's range (NaN stays a gap);
    hover and exports keep the true values."""
    low, high = scale.range
    shown = to_display(values, scale.log)
    clamped: np.ndarray = np.clip(
        shown, -math.inf if low is None else low, math.inf if high is None else high
    )
    return clamped


def metric_label(metric: str) -> str:
    """``"train_loss"`` → ``"train loss"``; ``"test_acc"`` → ``"test accuracy"`` (the first two
    ``_`` parts, as figure.js's ``metricLabel``)."""
    split, *rest = metric.split("_")
    if not rest:
        return split
    return f"{split} {'accuracy' if rest[0] == 'acc' else rest[0]}"


def value_title(metric: str, scale: Scale) -> str:
    """Colour bar / axis title: ``"train loss (log scale)"``, ``"train loss (clamped at 10)"``."""
    label = metric_label(metric)
    if scale.log:
        return f"{label} (log scale)"
    return f"{label} (clamped at {_js_str(LOSS_CAP)})" if scale.capped else label


def colorscale(capped: bool) -> list[list[float | str]]:
    """Plotly colour scale: Viridis, with the clamped top (values drawn at the cap) in grey."""
    n = len(VIRIDIS) - 1
    stops: list[list[float | str]] = [
        [k / n, f"rgb({r},{g},{b})"] for k, (r, g, b) in enumerate(VIRIDIS)
    ]
    if capped:
        stops[-1] = [0.998, stops[-1][1]]
        stops.append([1, CAPPED_COLOR])
    return stops


def _round_js(value: float, digits: int, *, exponent: bool) -> str:
    """``v.toPrecision(digits)`` / ``v.toExponential(digits - 1)``: half away from zero on the
    exact binary value, as JS does (Python's formatting rounds half to even)."""
    exact = Decimal(value)
    places = exact.adjusted() - digits + 1
    rounded = exact.quantize(Decimal(1).scaleb(places), rounding=ROUND_HALF_UP)
    if exponent:
        mantissa, power = f"{rounded:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(power)}"
    return format(rounded, "f")


def short(value: float | None) -> str:
    """A number short: ``0.0123``, ``12.35``, ``1.1e9`` (figure.js's ``short``)."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return _round_js(value, 2, exponent=True)
    return _js_str(float(_round_js(value, 4, exponent=False)))


def cap_note(scale: Scale) -> str:
    """The clamp in words, for the figure: what is grey and how far the values really go."""
    if not scale.capped:
        return ""
    cap = _js_str(LOSS_CAP)
    return f"grey: values above {cap} drawn at {cap} — max {short(scale.max)}"


def decade_ticks(scale: Scale) -> dict[str, list[Any]] | None:
    """Log scales labelled in the metric's own units at whole decades (0.01, 0.1, 1, 10), at
    most about 6 of them; None when linear or fewer than two decades fit (figure.js's
    ``decadeTicks``)."""
    low, high = scale.range
    if not scale.log or low is None or high is None:
        return None
    first, last = math.ceil(low), math.floor(high)
    step = max(1, math.ceil((last - first + 1) / 6))
    ticks = list(range(first, last + 1, step))
    if len(ticks) < 2:
        return None
    return {"tickvals": ticks, "ticktext": [short(10.0**k) for k in ticks]}
