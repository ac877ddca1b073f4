"""Hessian directions' Lanczos run as a long job: progress per step, prompt cancel, a cap, and
eigenvectors stored before the grid so that a stopped surface resumes without Lanczos."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import tiny_mlp_checkpoint

from landscape import storage as store
from landscape.analysis import hessian_directions as hd
from landscape.analysis.hessian import HessianOperator, LanczosOptions
from landscape.cli import main
from landscape.data import load_data
from landscape.errors import CancelledError, SpecError
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import (
    MAX_LANCZOS_STEPS,
    DataSpec,
    DirectionSpec,
    EngineOptions,
    GridSpec,
    SurfaceSpec,
)
from landscape.surface import Progress, compute_surface

FAST = EngineOptions(device="cpu", workers=1, compile=False)
DATA = DataSpec(train_size=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _spec(checkpoint: Path, **directions: Any) -> SurfaceSpec:
    return SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DATA,
        grid=GridSpec(x_range=(-0.2, 0.2), n_x=4, y_range=(-0.2, 0.2), n_y=3),
        directions=DirectionSpec(kind="hessian", seed=3, **directions),
    )


def _operator(checkpoint: Path) -> HessianOperator:
    model, _ = load_checkpoint(checkpoint)
    return HessianOperator(model, load_data(DATA, "train"), device="cpu")


def test_progress_arrives_per_lanczos_step_before_the_grid(
    checkpoint: Path, tmp_path: Path
) -> None:
    reports: list[Progress] = []
    compute_surface(_spec(checkpoint), tmp_path / "s.h5", options=FAST, on_progress=reports.append)
    stages = [r.stage for r in reports]
    first_grid = stages.index("grid")
    steps = reports[:first_grid]
    assert steps and {r.stage for r in steps} == {"directions"}  # all before the grid
    info = store.read_surface(tmp_path / "s.h5").attrs["directions_info"]
    assert [r.done for r in steps] == list(range(1, info["lanczos_steps"] + 1))
    assert {r.total for r in steps} == {DirectionSpec().max_lanczos_steps}
    assert all(r.stage == "grid" for r in reports[first_grid:])


def test_should_stop_after_two_steps_stops_at_once_and_writes_nothing(
    checkpoint: Path, tmp_path: Path
) -> None:
    steps: list[int] = []

    def on_progress(progress: Progress) -> None:
        if progress.stage == "directions":
            steps.append(progress.done)

    out = tmp_path / "s.h5"
    with pytest.raises(CancelledError, match="after 2 Lanczos steps"):
        compute_surface(
            _spec(checkpoint),
            out,
            options=FAST,
            on_progress=on_progress,
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    assert not out.exists() and not store.journal_path(out).exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either

    operator = _operator(checkpoint)
    with pytest.raises(CancelledError):
        hd.top_eigenvectors(operator, 2, LanczosOptions(), should_stop=lambda: True)
    assert operator.matvecs == 1  # asked before the first step's end: one product spent


def test_the_cap_is_honoured_and_says_it_did_not_converge(checkpoint: Path) -> None:
    free = hd.top_eigenvectors(_operator(checkpoint), 2, LanczosOptions())
    assert free.converged and 3 < free.steps < DirectionSpec().max_lanczos_steps
    operator = _operator(checkpoint)
    capped = hd.top_eigenvectors(operator, 2, LanczosOptions(), max_steps=3)
    assert capped.steps == 3 and operator.matvecs == 3 + 2  # + one residual product each
    assert not capped.converged and np.any(capped.residuals > capped.tolerance)
    # the capped values are Ritz values: below the converged ones (interlacing)
    assert np.all(capped.values <= free.values + 1e-6)


def test_the_cap_is_refused_above_the_limit(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=rf"max_lanczos_steps must be 2\.\.{MAX_LANCZOS_STEPS}"):
        DirectionSpec(kind="hessian", max_lanczos_steps=MAX_LANCZOS_STEPS + 1)
    with pytest.raises(SpecError, match="applies to directions of kind 'hessian'"):
        DirectionSpec(kind="random", max_lanczos_steps=20)
    with pytest.raises(SpecError, match=f"2..{MAX_LANCZOS_STEPS} Lanczos steps"):
        hd.top_eigenvectors(_operator(checkpoint), 2, LanczosOptions(), max_steps=1000)
    out = tmp_path / "s.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--directions", "hessian", "--quiet"]
    code = main([*args, "--max-lanczos-steps", "500", "--out", str(out), "--device", "cpu"])
    assert code == 2 and not out.exists()


def test_a_capped_spec_is_a_surface_of_its_own(checkpoint: Path, tmp_path: Path) -> None:
    default, capped = _spec(checkpoint), _spec(checkpoint, max_lanczos_steps=3)
    assert store.surface_key(default, "sha") != store.surface_key(capped, "sha")
    compute_surface(capped, tmp_path / "c.h5", options=FAST)
    info = store.read_surface(tmp_path / "c.h5").attrs["directions_info"]
    assert info["lanczos_steps"] == 3 and info["converged"] is False


def test_a_surface_stopped_after_its_directions_resumes_without_lanczos(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    real = hd.top_eigenvectors

    def counted(*args: Any, **kwargs: Any) -> hd.TopEigenpairs:
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hd, "top_eigenvectors", counted)
    spec, out = _spec(checkpoint), tmp_path / "stopped.h5"
    seen: list[Progress] = []
    with pytest.raises(CancelledError):
        compute_surface(
            spec,
            out,
            options=FAST,
            on_progress=seen.append,
            should_stop=lambda: any(p.stage == "grid" for p in seen),
        )
    assert len(runs) == 1
    stopped = store.read_surface(out)
    assert stopped.done < stopped.total  # the grid had not finished
    info = stopped.attrs["directions_info"]  # what Lanczos found is in the file already
    assert info["converged"] is True and info["lanczos_steps"] >= 2
    assert len(info["eigenvalues"]) == len(info["residuals"]) == 2

    compute_surface(spec, out, options=FAST)  # the restarted job
    assert len(runs) == 1  # read back, not recomputed
    compute_surface(spec, tmp_path / "whole.h5", options=FAST)  # uninterrupted
    assert len(runs) == 2
    resumed, whole = store.read_surface(out), store.read_surface(tmp_path / "whole.h5")
    assert resumed.status == whole.status == "complete"
    for a, b in zip(store.read_directions(out), store.read_directions(tmp_path / "whole.h5"),
                    strict=True):  # fmt: skip
        for name in a:
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
    for metric in spec.metric_names:
        np.testing.assert_allclose(resumed.values[metric], whole.values[metric], rtol=1e-6)


def test_the_cli_draws_a_bar_for_the_directions_then_one_for_the_points(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["surface", "--checkpoint", str(checkpoint), "--directions", "hessian", "--grid", "3"]
    fast = ["--train-size", "64", "--workers", "1", "--no-compile", "--device", "cpu"]
    assert main([*args, *fast, "--max-lanczos-steps", "50", "--out", str(tmp_path / "s.h5")]) == 0
    bars = capsys.readouterr().err
    assert re.search(r"directions: .*\d+/50 step", bars) and "surface: 100% 9/9 pt" in bars
    assert bars.index("directions") < bars.index("surface")
