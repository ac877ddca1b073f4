"""Gradient flow and sharpness run under the engine's precision policy (``compute_in``), record
the precision they used, and their shells pass it; in fp32 the numbers are those of the plain
computation outside any policy."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_support import tiny_mlp_checkpoint
from torch import Tensor, nn

from landscape.analysis import gradient_flow as flow_module
from landscape.analysis import hessian as hessian_module
from landscape.analysis import sharpness as sharpness_module
from landscape.analysis.gradient_flow import forward_layers, gradient_flow
from landscape.analysis.sharpness import trajectory_sharpness
from landscape.cli import main
from landscape.data import load_data
from landscape.engine.point_evaluator import per_sample_loss
from landscape.engine.precision import compute_in
from landscape.errors import SpecError, UnknownNameError
from landscape.specs import DataSpec

DATA = DataSpec(train_size=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


class _Spy:
    """Stands in for ``compute_in``: records each precision asked for and whether a block is
    open, then enters the real policy."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.depth = 0

    @contextlib.contextmanager
    def __call__(self, precision: Any, device: torch.device, **kwargs: Any) -> Iterator[None]:
        self.calls.append((precision, device.type))
        self.depth += 1
        try:
            with compute_in(precision, device, **kwargs):
                yield
        finally:
            self.depth -= 1


def _mlp() -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(37, 4, generator=g), torch.randint(0, 3, (37,), generator=g))


def _flow_outside_any_policy(model: nn.Module, data: tuple[Tensor, Tensor]) -> np.ndarray:
    """The gradient norms as computed before precisions applied here: the same batches, no
    policy around them."""
    work, (x, y) = copy.deepcopy(model), data
    work.train()
    for start in range(0, len(y), 10):
        loss = per_sample_loss(work(x[start : start + 10]), y[start : start + 10], "cross_entropy")
        (loss.sum() / len(y)).backward()  # type: ignore[no-untyped-call]
    params = dict(work.named_parameters())
    names = forward_layers(work, x)
    return np.array([float(params[n].grad.double().norm()) for n in names])  # type: ignore[union-attr]


def test_gradient_flow_runs_its_passes_inside_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(flow_module, "compute_in", spy)
    model, data = _mlp()
    inside: list[bool] = []
    model.register_forward_hook(
        lambda *_: inside.append(spy.depth > 0) if torch.is_grad_enabled() else None
    )
    flow = gradient_flow(model, data, precision="fp32", batch_size=10)
    assert spy.calls == [("fp32", "cpu")]
    assert inside == [True] * 4  # every forward with a backward (4 batches) inside the block
    assert flow.settings["precision"] == "fp32"
    np.testing.assert_array_equal(flow.grad_norm, _flow_outside_any_policy(model, data))

    spy.calls.clear()
    assert gradient_flow(model, data).settings["precision"] == "fp32"  # auto on a CPU
    assert spy.calls == [("fp32", "cpu")]
    with pytest.raises(SpecError, match="needs a CUDA device"):
        gradient_flow(model, data, precision="tf32")
    with pytest.raises(UnknownNameError, match="unknown precision 'fp16'"):
        gradient_flow(model, data, precision="fp16")  # type: ignore[arg-type]


def test_gradient_flow_cli_passes_and_prints_the_precision(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spy = _Spy()
    monkeypatch.setattr(flow_module, "compute_in", spy)
    args = ["gradient-flow", "--checkpoint", str(checkpoint), "--train-size", "64"]
    assert main([*args, "--device", "cpu", "--precision", "fp32", "--json", "--quiet"]) == 0
    flows = json.loads(capsys.readouterr().out)
    assert {f["settings"]["precision"] for f in flows.values()} == {"fp32"}
    assert spy.calls == [("fp32", "cpu")] * 2  # init and trained
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    assert ", in fp32" in capsys.readouterr().out
    assert main([*args, "--device", "cpu", "--precision", "tf32", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert "tf32" in error and "CUDA" in error and len(error.splitlines()) == 1


def _snapshots(folder: Path) -> list[Path]:
    from landscape.models import build
    from landscape.sources.checkpoint import save_checkpoint

    args = {"depth": 1, "width": 4, "in_channels": 1, "num_classes": 10, "image_size": 8}
    paths = []
    for epoch in (0, 1):
        torch.manual_seed(epoch)
        model = build("mlp-plain", **args)
        meta = {"epoch": epoch, "model": "mlp-plain", "train_spec": {"data": DATA.__dict__}}
        path = folder / f"epoch_{epoch:03d}.pt"
        save_checkpoint(path, model, model_name="mlp-plain", model_args=args, metadata=meta)
        paths.append(path)
    return paths


def test_sharpness_products_and_loss_run_inside_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _snapshots(tmp_path)
    loss_spy, product_spy = _Spy(), _Spy()
    monkeypatch.setattr(sharpness_module, "compute_in", loss_spy)
    monkeypatch.setattr(hessian_module, "compute_in", product_spy)
    records = trajectory_sharpness(paths, device="cpu", precision="fp32")
    assert loss_spy.calls == [("fp32", "cpu")] * 2  # one mean loss per snapshot
    assert product_spy.calls and set(product_spy.calls) == {("fp32", "cpu")}
    assert [r["precision"] for r in records] == ["fp32", "fp32"]
    _, attrs = sharpness_module.group_contents(records, {"loss": "cross_entropy"})
    assert attrs["precision"] == "fp32"

    # fp32: the loss of the plain computation outside any policy
    from landscape.sources.checkpoint import load_checkpoint

    x, y = load_data(DATA, "train")
    for record, path in zip(records, paths, strict=True):
        model, _ = load_checkpoint(path)
        with torch.no_grad():
            plain = per_sample_loss(model.eval()(x), y, "cross_entropy").double().mean()
        assert record["loss"] == pytest.approx(float(plain), rel=1e-6)
    assert trajectory_sharpness(paths, device="cpu")[0]["precision"] == "fp32"  # auto, CPU


def test_sharpness_refuses_bf16_and_tf32_off_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _snapshots(tmp_path)
    with pytest.raises(SpecError, match="needs a CUDA device"):
        trajectory_sharpness(paths, device="cpu", precision="tf32")
    monkeypatch.setattr(sharpness_module, "resolve", lambda precision, device: precision)
    with pytest.raises(SpecError, match="fp32 or tf32"):  # as on a CUDA device
        trajectory_sharpness(paths, device="cpu", precision="bf16")


def test_sharpness_cli_passes_the_precision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in _snapshots(tmp_path)]
    base = ["sharpness", "--trajectory", *paths, "--device", "cpu", "--quiet"]
    assert main([*base, "--precision", "fp32", "--json"]) == 0
    assert {r["precision"] for r in json.loads(capsys.readouterr().out)} == {"fp32"}
    assert main(base) == 0
    assert "in fp32" in capsys.readouterr().out
    assert main([*base, "--precision", "double"]) == 2
    assert "precision" in capsys.readouterr().err


class _Stop(Exception):
    pass


@pytest.mark.parametrize("worker", ["fp32", "auto", "bf16"])
def test_the_job_runners_pass_the_workers_precision(
    worker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.runners import gradient_flow as flow_runner
    from api.runners import sharpness as sharpness_runner
    from api.runners.base import JobContext
    from tests.api.test_api import tiny_settings

    seen: dict[str, Any] = {}

    def fake_flow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen["flow"] = kwargs["precision"]
        return {}

    def fake_sharpness(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        seen["sharpness"] = kwargs["precision"]
        raise _Stop  # before the runner writes the group

    monkeypatch.setattr("landscape.analysis.flow_analyze.analyze_gradient_flow", fake_flow)
    monkeypatch.setattr("landscape.analysis.sharpness.trajectory_sharpness", fake_sharpness)
    settings = tiny_settings(tmp_path, engine_precision=worker)
    ctx = JobContext("job", settings, None, lambda: False, lambda **_: None)  # type: ignore[arg-type]
    plan = {"surface_id": "s", "surface_path": str(tmp_path / "s.h5"), "checkpoint": "c.pt",
            "data": DATA.__dict__}  # fmt: skip
    flow_runner.run({**plan, "mode": "train"}, ctx)
    with pytest.raises(_Stop):
        sharpness_runner.run({**plan, "snapshots": ["c.pt"], "loss": "cross_entropy"}, ctx)
    assert seen == {"flow": worker, "sharpness": "tf32" if worker == "bf16" else worker}


@pytest.mark.gpu
def test_on_cuda_auto_is_tf32_and_fp32_matches_the_cpu() -> None:
    model, data = _mlp()
    on_cpu = gradient_flow(model, data, precision="fp32")
    gpu_model, gpu_data = copy.deepcopy(model).cuda(), (data[0].cuda(), data[1].cuda())
    assert gradient_flow(gpu_model, gpu_data).settings["precision"] == "tf32"
    strict = gradient_flow(gpu_model, gpu_data, precision="fp32")
    np.testing.assert_allclose(strict.grad_norm, on_cpu.grad_norm, rtol=1e-5)
    assert gradient_flow(gpu_model, gpu_data, precision="bf16").settings["precision"] == "bf16"
