"""compute_surface end to end on a tiny checkpoint: values, progress, cancel, resume after kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import storage as store
from landscape.data import load_data
from landscape.engine.evaluator import reference_evaluate
from landscape.errors import CancelledError, SurfaceFileError
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.surface import Progress, compute_surface

FAST = EngineOptions(device="cpu", workers=1, compile=False)
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 2, "width": 16}
CLI = "import sys; from landscape.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    return save_checkpoint(path, model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={})


def _spec(checkpoint: Path, **kwargs: object) -> SurfaceSpec:
    base: dict[str, object] = {
        "checkpoint": str(checkpoint),
        "data": DataSpec(train_size=64, test_size=32),
        "grid": GridSpec(x_range=(-1.0, 1.0), n_x=5, y_range=(-0.5, 0.5), n_y=3),
    }
    return SurfaceSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def _reference(spec: SurfaceSpec, path: Path) -> dict[str, np.ndarray]:
    """Values from the naive per-point loop at the file's own coordinates and directions."""
    model, _ = load_checkpoint(spec.checkpoint)
    surface = store.read_surface(path)
    flat = np.arange(spec.grid.n_points)
    coords = store.flat_coordinates(surface.x, surface.y, flat)
    data = {s: load_data(spec.data, s) for s in spec.splits}
    values = reference_evaluate(model, store.read_directions(path), coords, data, loss=spec.loss)
    shape = surface.values[spec.metric_names[0]].shape
    return {k: v.reshape(shape) for k, v in values.items()}


def test_surface_equals_the_per_point_reference(checkpoint: Path, tmp_path: Path) -> None:
    spec = _spec(checkpoint, splits=("train", "test"))
    reports: list[Progress] = []
    out = compute_surface(spec, tmp_path / "s.h5", options=FAST, on_progress=reports.append)
    surface = store.read_surface(out)
    assert surface.status == "complete" and surface.values["train_loss"].shape == (3, 5)
    reference = _reference(spec, out)
    for metric in spec.metric_names:
        np.testing.assert_allclose(surface.values[metric], reference[metric], rtol=1e-5)
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    assert reports[0].done == 0 and reports[-1].done == reports[-1].total == 15
    assert reports[-1].eta_s == 0.0
    assert surface.attrs["checkpoint_sha256"] and surface.attrs["model"] == "mlp-plain"
    assert surface.attrs["engine"]["device"] == "cpu"
    assert {"sharpness", "roughness", "train_loss_center", "test_acc_max"} <= set(surface.metrics)


def test_one_dimensional_curve(checkpoint: Path, tmp_path: Path) -> None:
    spec = _spec(checkpoint, grid=GridSpec(x_range=(-1.0, 1.0), n_x=7, y_range=None, n_y=None))
    out = compute_surface(spec, tmp_path / "c.h5", options=FAST)
    surface = store.read_surface(out)
    assert surface.y is None and surface.values["train_loss"].shape == (7,)
    np.testing.assert_allclose(
        surface.values["train_loss"], _reference(spec, out)["train_loss"], rtol=1e-5
    )


def test_cancel_keeps_finished_points_and_resume_completes(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(checkpoint)
    reports: list[Progress] = []
    out = tmp_path / "s.h5"
    with pytest.raises(CancelledError):
        compute_surface(
            spec,
            out,
            options=FAST,
            on_progress=reports.append,
            should_stop=lambda: len(reports) >= 4,
        )
    partial = store.read_surface(out)
    assert partial.status == "partial" and 0 < partial.done < partial.total
    kept = {m: v.copy() for m, v in partial.values.items()}

    # Resuming must reuse the stored directions: regenerating them would be a different surface.
    def no_new_directions(*args: object, **kwargs: object) -> None:
        raise AssertionError("directions regenerated on resume")

    monkeypatch.setattr("landscape.directions.make_directions", no_new_directions)
    resumed: list[Progress] = []
    compute_surface(spec, out, options=FAST, on_progress=resumed.append)
    assert resumed[0].done == partial.done  # only the missing points were computed
    final = store.read_surface(out)
    assert final.status == "complete"
    for metric, before in kept.items():
        done = ~np.isnan(before)
        np.testing.assert_array_equal(final.values[metric][done], before[done])
    monkeypatch.undo()
    fresh = compute_surface(spec, tmp_path / "fresh.h5", options=FAST)
    for metric in spec.metric_names:
        np.testing.assert_allclose(
            final.values[metric], store.read_surface(fresh).values[metric], rtol=1e-6
        )


def test_a_different_request_for_an_existing_file_is_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.h5"
    compute_surface(_spec(checkpoint), out, options=FAST)
    before = out.read_bytes()
    with pytest.raises(SurfaceFileError, match=r"directions\.seed"):
        compute_surface(_spec(checkpoint, directions=DirectionSpec(seed=1)), out, options=FAST)
    assert out.read_bytes() == before
    assert compute_surface(_spec(checkpoint), out, options=FAST) == out  # cached: no work


def _done(path: Path, total: int) -> int:
    try:
        return total - len(store.missing_points(path))
    except SurfaceFileError:
        return 0  # not created yet


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(
    checkpoint: Path, tmp_path: Path
) -> None:
    """A real ``landscape surface`` process killed with SIGKILL resumes from its file."""
    grid = 21
    out = tmp_path / "killed.h5"
    args = [
        "surface", "--checkpoint", str(checkpoint), "--grid", str(grid), "--range", "-1", "1",
        "--train-size", "128", "--workers", "1", "--no-compile", "--device", "cpu",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    total = grid * grid
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _done(out, total) == 0:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no points written in 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _done(out, total)
    assert 0 < killed_at < total, f"expected a partial file, found {killed_at}/{total} points"
    assert store.read_surface(out).status == "partial"

    rerun = subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    resumed = store.read_surface(out)
    assert resumed.status == "complete" and resumed.done == total

    spec = resumed.spec
    whole = compute_surface(spec, tmp_path / "whole.h5", options=FAST)
    for metric in spec.metric_names:
        np.testing.assert_allclose(
            resumed.values[metric], store.read_surface(whole).values[metric], rtol=1e-6
        )


def test_a_nan_checkpoint_gives_a_complete_surface_of_nonfinite_points(tmp_path: Path) -> None:
    """Computed-but-NaN is a result, not a gap: the run finishes and says so."""
    model = build("mlp-plain", **MODEL_ARGS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    bad = save_checkpoint(
        tmp_path / "nan.pt", model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={}
    )
    out = compute_surface(_spec(bad), tmp_path / "nan.h5", options=FAST)
    surface = store.read_surface(out)
    assert surface.status == "complete" and surface.done == surface.total == 15
    assert surface.nonfinite == 15 and len(surface.missing()) == 0
    assert compute_surface(_spec(bad), out, options=FAST) == out  # nothing left to compute


def test_a_resume_in_another_precision_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    spec = _spec(checkpoint)
    with pytest.raises(CancelledError):
        compute_surface(spec, out, options=FAST, should_stop=lambda: True)
    assert store.read_surface(out).precision == "fp32"
    # As if the first part had run in bf16 on a GPU: a CPU (fp32) resume must not mix them in.
    with h5py.File(out, "r+") as f:
        f.attrs["precision"] = "bf16"
    with pytest.raises(SurfaceFileError, match="precision 'bf16'"):
        compute_surface(spec, out, options=FAST)
