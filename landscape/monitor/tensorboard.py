"""The monitor's measurements as TensorBoard events, beside the user's own runs.

Scalars ``landscape/lambda_max``, ``landscape/two_over_lr`` (the edge-of-stability line,
Cohen et al. 2021), ``landscape/trace`` and ``landscape/loss``; the 1-D curve as a histogram
whose buckets are the curve's points (TensorBoard's histogram tab then stacks one curve per
step); the 2-D surface as an image, drawn by matplotlib when it is installed, else by a small
NumPy colormap (no plotting dependency is needed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# viridis at five stops: enough for a small surface without matplotlib
_STOPS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64
)
UPSCALE = 24  # pixels per grid point of the NumPy image (7×7 → 168×168)


def open_writer(target: Any) -> tuple[SummaryWriter | None, bool]:
    """The writer for ``target`` (a ``SummaryWriter``, a log folder, or None) and whether the
    monitor owns it (made it from a folder, so closes it)."""
    if target is None:
        return None, False
    if isinstance(target, (str, Path)):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's module needs the tensorboard package
            from landscape.errors import SpecError

            raise SpecError(
                "TensorBoard logging needs the tensorboard package: "
                "pip install 'landscape[monitor]'"
            ) from exc
        return SummaryWriter(log_dir=str(target)), True
    if not hasattr(target, "add_scalar"):
        from landscape.errors import SpecError

        raise SpecError(
            f"tensorboard must be a SummaryWriter, a log folder or None, got {type(target)!r}"
        )
    return target, False


def colormap_image(values: np.ndarray) -> np.ndarray:
    """``values`` (ny, nx) as an RGB uint8 image (H, W, 3), low = dark, high = yellow; rows
    flipped so y grows upwards, as on a plot."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)[::-1]
    position = scaled * (len(_STOPS) - 1)
    lower = np.minimum(position.astype(np.int64), len(_STOPS) - 2)
    frac = (position - lower)[..., None]
    rgb = _STOPS[lower] * (1 - frac) + _STOPS[lower + 1] * frac
    image = np.kron(rgb, np.ones((UPSCALE, UPSCALE, 1)))
    return np.round(image).astype(np.uint8)


def surface_image(x: np.ndarray, y: np.ndarray, loss: np.ndarray, step: int) -> np.ndarray:
    """The surface ``loss`` (nx, ny) as an RGB uint8 image (H, W, 3): a matplotlib contour
    plot with a colour bar when matplotlib is installed, else ``colormap_image``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return colormap_image(loss.T)
    figure = Figure(figsize=(3.2, 2.8), dpi=80)
    canvas = FigureCanvasAgg(figure)  # no pyplot: the user's figures are left alone
    axes = figure.add_subplot()
    mesh = axes.contourf(x, y, loss.T, levels=15, cmap="viridis")
    figure.colorbar(mesh, ax=axes, label="loss")
    axes.plot([0], [0], "w+", markersize=8)
    axes.set(xlabel="x", ylabel="y", title=f"step {step}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="rgba")  # RGBA rows of the canvas
    width, height = canvas.get_width_height()
    rgba = np.frombuffer(buffer.getvalue(), np.uint8).reshape(height, width, 4)
    return rgba[..., :3].copy()


def log_call(writer: SummaryWriter, step: int, result: dict[str, Any]) -> None:
    """One monitor call's numbers at ``step``; flushed, so a running TensorBoard shows them."""
    for key in ("lambda_max", "two_over_lr", "trace", "loss"):
        if result.get(key) is not None:
            writer.add_scalar(f"landscape/{key}", float(result[key]), step)
    curve = result.get("curve1d")
    if curve is not None:
        x, loss = curve
        # buckets: one per point, right edges at the points; counts: the loss there
        writer.add_histogram_raw(
            "landscape/curve1d",
            min=float(x[0]),
            max=float(x[-1]),
            num=float(loss.sum()),
            sum=float((x * loss).sum()),
            sum_squares=float((x * x * loss).sum()),
            bucket_limits=[float(v) for v in x],
            bucket_counts=[float(v) for v in loss],
            global_step=step,
        )
    surface = result.get("surface2d")
    if surface is not None:
        x, y, loss = surface
        writer.add_image(
            "landscape/surface2d", surface_image(x, y, loss, step), step, dataformats="HWC"
        )
    writer.flush()
