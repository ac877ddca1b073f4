"""The monitor's TensorBoard events, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from torch.utils.tensorboard import SummaryWriter

from landscape import load_dataset
from landscape.monitor import Monitor
from landscape.monitor import tensorboard as tb

ALL = ("lambda_max", "trace", "curve1d", "surface2d")


def _events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


def _run(monitor: Monitor, steps: int) -> list[tuple[int, float, object]]:
    """SGD on the monitor's subset, η halved at step 4: ``(step, lr, result)`` measured."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    x, y = monitor.data
    seen = []
    for step in range(steps):
        result = monitor.step(model, step, optimizer)
        if result is not None:
            seen.append((step, optimizer.param_groups[0]["lr"], result))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        schedule.step()
    return seen


@pytest.mark.slow  # 1.7 s with one thread; 13-16 s with two on a loaded 2-core CPU
def test_scalars_histogram_and_image_are_at_the_measured_steps(tmp_path: Path) -> None:
    data = load_dataset("digits", "train", size=96)
    with Monitor(
        None, data, every=3, measure=ALL, tensorboard=tmp_path / "tb", surface_points=5
    ) as monitor:
        seen = _run(monitor, steps=7)
    events = _events(tmp_path / "tb")
    tags = events.Tags()
    for tag in ("landscape/lambda_max", "landscape/two_over_lr", "landscape/trace"):
        assert tag in tags["scalars"]
    steps = [s for s, _, _ in seen]
    assert steps == [0, 3, 6]

    def scalars(tag: str) -> tuple[list[int], list[float]]:
        found = events.Scalars(tag)
        return [e.step for e in found], [e.value for e in found]

    logged_steps, lam = scalars("landscape/lambda_max")
    assert logged_steps == steps
    assert lam == pytest.approx([r.lambda_max for _, _, r in seen], rel=1e-6)  # float32 events
    _, two = scalars("landscape/two_over_lr")
    assert two == pytest.approx([2 / lr for _, lr, _ in seen], rel=1e-6)
    assert two == pytest.approx([5.0, 5.0, 10.0])  # η halved after step 3's update
    _, trace = scalars("landscape/trace")
    assert trace == pytest.approx([r.trace for _, _, r in seen], rel=1e-6)

    histograms = events.Histograms("landscape/curve1d")
    assert [h.step for h in histograms] == steps
    curve = seen[1][2].curve1d
    assert histograms[1].histogram_value.bucket_limit == pytest.approx(list(curve[0]))
    assert histograms[1].histogram_value.bucket == pytest.approx(list(curve[1]), rel=1e-6)

    images = events.Images("landscape/surface2d")
    assert [i.step for i in images] == steps
    assert images[0].width > 100 and images[0].height > 100
    assert images[0].encoded_image_string[:4] == b"\x89PNG"


def test_a_given_writer_is_used_and_left_open(tmp_path: Path) -> None:
    data = load_dataset("digits", "train", size=100)
    writer = SummaryWriter(log_dir=str(tmp_path / "mine"))
    with Monitor(None, data, every=3, measure=("trace",), tensorboard=writer) as monitor:
        _run(monitor, steps=4)
    writer.add_scalar("user/after", 1.0, 9)  # still the user's, still open
    writer.close()
    events = _events(tmp_path / "mine")
    assert [e.step for e in events.Scalars("landscape/trace")] == [0, 3]
    assert [e.step for e in events.Scalars("user/after")] == [9]
    assert "landscape/lambda_max" not in events.Tags()["scalars"]


def test_without_matplotlib_the_surface_is_a_numpy_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With matplotlib unimportable the image is the NumPy colormap, and still logged."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    loss = np.add.outer(np.arange(5.0), np.arange(5.0) ** 2)
    image = tb.surface_image(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), loss, 0)
    assert np.array_equal(image, tb.colormap_image(loss.T))
    writer = SummaryWriter(log_dir=str(tmp_path / "np"))
    tb.log_call(writer, 5, {"surface2d": (np.linspace(-1, 1, 5),) * 2 + (loss,)})
    writer.close()
    monkeypatch.undo()
    images = _events(tmp_path / "np").Images("landscape/surface2d")
    assert [i.step for i in images] == [5] and images[0].width == 5 * tb.UPSCALE


def test_a_bad_tensorboard_target_is_a_clear_error() -> None:
    from landscape.errors import SpecError

    data = load_dataset("digits", "train", size=20)
    with pytest.raises(SpecError, match="SummaryWriter, a log folder or None"):
        Monitor(None, data, tensorboard=42)
