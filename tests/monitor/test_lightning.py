"""The monitor as a PyTorch Lightning callback, on a tiny LightningModule fitted on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from landscape import load_dataset  # noqa: E402
from landscape.monitor import Monitor, read_run  # noqa: E402
from landscape.monitor.lightning import LandscapeCallback  # noqa: E402


class Tiny(L.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2)


@pytest.mark.slow  # importing lightning and starting a Trainer take seconds
def test_the_callback_measures_every_n_optimizer_steps_of_a_fit(tmp_path: Path) -> None:
    data = load_dataset("digits", "train", size=128)
    torch.manual_seed(0)
    module = Tiny()
    monitor = Monitor(None, data, every=3, measure=("lambda_max", "trace"),
                      run_file=tmp_path / "run.h5")  # fmt: skip
    trainer = L.Trainer(
        max_steps=7, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[LandscapeCallback(monitor)],
    )  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(*data), batch_size=16, shuffle=True))
    run = read_run(tmp_path / "run.h5")
    assert [r["step"] for r in run.sharpness] == [0, 3, 6]
    assert all(r["lr"] == 0.2 and r["lambda_max"] > 0 for r in run.sharpness)
    assert [t["step"] for t in run.traces] == [0, 3, 6]
    assert len({r["lambda_max"] for r in run.sharpness}) == 3  # measured as the weights moved
    assert trainer.global_step == 7  # the fit ran as it would have


@pytest.mark.slow
def test_accumulated_batches_share_a_step_and_are_measured_once(tmp_path: Path) -> None:
    """With two batches per optimizer step, the monitor sees optimizer steps 0, 2, 4 once each
    (the batch between two steps does not measure the same weights again)."""
    data = load_dataset("digits", "train", size=128)
    torch.manual_seed(0)
    monitor = Monitor(None, data, every=2, measure=("trace",), run_file=tmp_path / "run.h5")
    trainer = L.Trainer(
        max_steps=4, accumulate_grad_batches=2, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[LandscapeCallback(monitor)],
    )  # fmt: skip
    trainer.fit(Tiny(), DataLoader(TensorDataset(*data), batch_size=16))
    run = read_run(tmp_path / "run.h5")
    assert [c["step"] for c in run.calls] == [0, 2, 4]
