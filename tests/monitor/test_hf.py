"""The monitor as a Hugging Face TrainerCallback, on a tiny model built here (no hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it

from landscape import load_dataset  # noqa: E402
from landscape.monitor import Monitor, read_run  # noqa: E402
from landscape.monitor.hf import LandscapeCallback  # noqa: E402


class Tiny(nn.Module):
    """A model the way Trainer calls them: keyword inputs in, a dict with the loss out."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


class Samples(torch.utils.data.Dataset[dict[str, Tensor]]):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.mark.slow  # importing transformers and starting a Trainer take seconds
def test_the_callback_measures_every_n_steps_of_a_trainer_run(tmp_path: Path) -> None:
    x, y = load_dataset("digits", "train", size=128)
    torch.manual_seed(0)
    model = Tiny()

    def logits(m: nn.Module, inputs: Tensor) -> Tensor:
        out: Any = m(x=inputs)
        return out["logits"]  # type: ignore[no-any-return]

    monitor = Monitor(None, (x, y), every=2, measure=("lambda_max",), forward=logits,
                      run_file=tmp_path / "run.h5")  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=5, per_device_train_batch_size=16,
        learning_rate=0.1, lr_scheduler_type="constant", optim="sgd", report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Samples(x, y),
        callbacks=[LandscapeCallback(monitor)],
    )  # fmt: skip
    trainer.train()
    run = read_run(tmp_path / "run.h5")
    assert [r["step"] for r in run.sharpness] == [0, 2, 4]
    assert all(r["lr"] == pytest.approx(0.1) for r in run.sharpness)
    assert len({r["lambda_max"] for r in run.sharpness}) == 3
    assert trainer.state.global_step == 5
