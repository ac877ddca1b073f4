"""Estimated surfaces end to end on digits: exact points, make exact, identity, resume, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import error_line

from landscape import storage as store
from landscape.cli import main
from landscape.data import load_data
from landscape.engine.evaluator import reference_evaluate
from landscape.errors import SurfaceFileError
from landscape.explore import EstimateSpec
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.storage.estimate import journal_stem
from landscape.storage.journal import journal_path
from landscape.surface import compute_surface

FAST = EngineOptions(device="cpu", workers=1, compile=False)
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 16}
CLI = "import sys; from landscape.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained MLP: losses that vary over the grid, accuracies neither 0 nor 1."""
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS)
    x, y = load_data(DataSpec(), "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    return save_checkpoint(path, model.eval(), model_name="mlp-plain", model_args=MODEL_ARGS,
                           metadata={})  # fmt: skip


def _spec(checkpoint: Path, n: int = 5, span: float = 0.5, **kwargs: object) -> SurfaceSpec:
    grid = GridSpec(x_range=(-span, span), n_x=n, y_range=(-span, span), n_y=n)
    return SurfaceSpec(checkpoint=str(checkpoint), grid=grid, **kwargs)  # type: ignore[arg-type]


def _reference(spec: SurfaceSpec, path: Path) -> dict[str, np.ndarray]:
    model, _ = load_checkpoint(spec.checkpoint)
    surface = store.read_surface(path)
    coords = store.flat_coordinates(surface.x, surface.y, np.arange(spec.grid.n_points))
    data = {s: load_data(spec.data, s) for s in spec.splits}
    values = reference_evaluate(model, store.read_directions(path), coords, data, loss=spec.loss)
    return {k: v.reshape(surface.computed.shape) for k, v in values.items()}


def test_made_exact_equals_a_fresh_exact_surface_and_reads_only_missing_samples(
    checkpoint: Path, tmp_path: Path
) -> None:
    spec = _spec(checkpoint, splits=("train", "test"))
    out = compute_surface(spec, tmp_path / "e.h5", options=FAST, estimate=EstimateSpec(0.05))
    estimated = store.read_surface(out)
    assert estimated.status == "complete" and estimated.estimate is not None
    state = estimated.estimate
    before = {s: p.n().copy() for s, p in state.splits.items()}
    assert not state.exact().all()  # the test needs points left to finish
    sizes = {s: p.size for s, p in state.splits.items()}
    centre_pass = sum(sizes.values())
    used = sum(int(n.sum()) for n in before.values())
    assert estimated.attrs["engine"]["samples"] == used + centre_pass

    compute_surface(spec, out, options=FAST, make_exact=True)
    made = store.read_surface(out)
    assert made.estimate is not None and made.estimate.exact().all()
    missing = sum(int((sizes[s] - before[s]).sum()) for s in sizes)
    assert made.attrs["engine"]["samples"] == missing  # nothing read twice
    points = spec.grid.n_points
    assert used + centre_pass + missing == points * sum(sizes.values()) + centre_pass

    fresh = store.read_surface(compute_surface(spec, tmp_path / "x.h5", options=FAST))
    reference = _reference(spec, out)
    for metric in spec.metric_names:
        np.testing.assert_allclose(made.values[metric], fresh.values[metric], rtol=1e-6)
        np.testing.assert_allclose(made.values[metric], reference[metric], rtol=1e-5)
        split, kind = metric.split("_")
        _, se = made.estimate.value(split, kind)
        assert (se == 0).all()


def test_points_estimated_exact_equal_the_reference_loop(checkpoint: Path, tmp_path: Path) -> None:
    spec = _spec(checkpoint, data=DataSpec(train_size=600))
    # an absolute target this tight sends far points to the whole split
    out = compute_surface(
        spec, tmp_path / "t.h5", options=FAST, estimate=EstimateSpec(0.002, False)
    )
    surface = store.read_surface(out)
    assert surface.estimate is not None
    exact = surface.estimate.grid(surface.estimate.exact())
    assert 0 < exact.sum() < spec.grid.n_points
    reference = _reference(spec, out)
    for metric in spec.metric_names:
        np.testing.assert_allclose(surface.values[metric][exact], reference[metric][exact],
                                   rtol=1e-5)  # fmt: skip


def test_an_estimate_has_its_own_identity(checkpoint: Path, tmp_path: Path) -> None:
    spec = _spec(checkpoint, n=3, data=DataSpec(train_size=300))
    five = compute_surface(spec, tmp_path / "a.h5", options=FAST, estimate=EstimateSpec(0.05))
    other_seed = compute_surface(
        spec, tmp_path / "b.h5", options=FAST, estimate=EstimateSpec(0.05, seed=1)
    )
    exact = compute_surface(spec, tmp_path / "c.h5", options=FAST)
    keys = {store.read_surface(p).key for p in (five, other_seed, exact)}
    assert len(keys) == 3
    assert store.read_surface(exact).key == store.surface_key(
        spec, store.read_surface(exact).attrs["checkpoint_sha256"]
    )
    with pytest.raises(SurfaceFileError, match=r"estimated .*--exact"):
        compute_surface(spec, five, options=FAST)  # never read as the exact surface
    with pytest.raises(SurfaceFileError, match="holds an estimated"):
        compute_surface(spec, five, options=FAST, estimate=EstimateSpec(0.02))
    with pytest.raises(SurfaceFileError, match="holds an exact"):
        compute_surface(spec, exact, options=FAST, estimate=EstimateSpec(0.05))


@pytest.mark.slow
def test_stated_intervals_cover_the_exact_values(checkpoint: Path, tmp_path: Path) -> None:
    """Over an 11×11 grid, both splits, loss and accuracy, two targets and permutations:
    ≥ 93 % of the 95 % intervals of points not read whole hold the full-pass value."""
    spec = _spec(checkpoint, n=11, span=1.0, splits=("train", "test"))
    exact = store.read_surface(compute_surface(spec, tmp_path / "x.h5", options=FAST))
    # wide targets and stages from 64: most points stop before digits' 360 test samples
    targets = (EstimateSpec(0.15, first_stage=64), EstimateSpec(0.1, False, 3, first_stage=64))
    inside: dict[str, list[np.ndarray]] = {}
    for target in targets:
        out = compute_surface(spec, tmp_path / f"{target.seed}.h5", options=FAST, estimate=target)
        state = store.read_surface(out).estimate
        assert state is not None
        for split, part in state.splits.items():
            sampled = part.n() < part.size
            for metric in ("loss", "acc"):
                value, se = state.value(split, metric)
                truth = exact.values[f"{split}_{metric}"].ravel()
                hit = np.abs(value - truth) <= part.z * se + 1e-6 * np.abs(truth)
                inside.setdefault(f"{split}_{metric}", []).append(hit[sampled])
    for name, hits in inside.items():
        pooled = np.concatenate(hits)
        assert pooled.size >= 100, f"{name}: only {pooled.size} estimated points to judge"
        assert pooled.mean() >= 0.93, (name, pooled.mean(), pooled.size)


def _records(out: Path) -> int:
    journal = journal_path(journal_stem(out))
    return journal.stat().st_size if journal.exists() else 0


@pytest.mark.slow
def test_kill_9_keeps_every_finished_stage(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    args = [
        "surface", "--checkpoint", str(checkpoint), "--grid", "15", "--range", "-1", "1",
        "--workers", "1", "--no-compile", "--device", "cpu", "--estimate", "0.01",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _records(out) <= 64:  # past the journal's header: a stage of a chunk is in
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no stage written in 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = store.read_surface(out)
    assert killed.status == "partial" and killed.estimate is not None
    kept = int(killed.estimate.splits["train"].n().sum())
    assert kept > 0

    rerun = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "train: estimate ±" in rerun.stdout
    resumed = store.read_surface(out)
    assert resumed.status == "complete"
    whole = store.read_surface(
        compute_surface(
            resumed.spec,
            tmp_path / "whole.h5",
            options=FAST,
            estimate=EstimateSpec(0.01, relative=False),
        )
    )
    assert whole.estimate is not None and resumed.estimate is not None
    np.testing.assert_array_equal(
        resumed.estimate.splits["train"].n(), whole.estimate.splits["train"].n()
    )
    # the rerun read only what the killed run had not finished
    centre_pass = whole.estimate.splits["train"].size  # the killed run had stored the centre
    assert (
        resumed.attrs["engine"]["samples"] == whole.attrs["engine"]["samples"] - kept - centre_pass
    )
    np.testing.assert_allclose(resumed.values["train_loss"], whole.values["train_loss"], rtol=1e-9)


@pytest.mark.parametrize("value", ["0", "150%", "abc", "0%"])
def test_bad_estimate_targets_are_one_line_and_exit_2(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    argv = ["surface", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.h5"),
            "--estimate", value]  # fmt: skip
    assert main(argv) == 2
    assert "estimate target" in error_line(capsys)
    assert not (tmp_path / "s.h5").exists()


def test_cli_estimates_then_makes_exact_and_info_says_which(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.h5"
    base = ["surface", "--checkpoint", str(checkpoint), "--grid", "5", "--range", "-0.5", "0.5",
            "--train-size", "600", "--workers", "1", "--no-compile", "--device", "cpu",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert main([*base, "--estimate", "5%"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "values      estimated" in text and "train: estimate ±" in text and "of 600" in text
    assert main([*base, "--exact"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: exact" in text
    assert main([*base, "--exact", "--estimate", "5%"]) == 2
