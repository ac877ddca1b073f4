"""Training: loss goes down, metadata holds independently checkable numbers, an interrupted
run resumes to the same weights, snapshots land where the PCA directions look for them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from landscape.data import load_dataset
from landscape.errors import CancelledError, CheckpointError, SpecError, UnknownNameError
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, TrainSpec
from landscape.train import partial_path, snapshot_dir, train_model

DATA = DataSpec(name="digits", train_size=96, test_size=48)


def spec(**overrides: Any) -> TrainSpec:
    values: dict[str, Any] = {
        "model": "resnet20", "data": DATA, "epochs": 3, "batch_size": 32, "device": "cpu",
    }  # fmt: skip
    return TrainSpec(**{**values, **overrides})


def hand_loss(model: torch.nn.Module, split: str, size: int) -> tuple[float, float]:
    x, y = load_dataset("digits", split, size=size)  # type: ignore[arg-type]
    with torch.no_grad():
        logits = model.eval()(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def test_training_reduces_loss_and_reports_true_numbers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    untrained = build("resnet20", in_channels=1, image_size=8)
    before, _ = hand_loss(untrained, "train", 96)
    records: list[dict[str, Any]] = []
    out = tmp_path / "m.pt"
    metadata = train_model(spec(epochs=5), out, on_epoch=records.append)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    model, stored = load_checkpoint(out)
    train_loss, train_acc = hand_loss(model, "train", 96)
    test_loss, test_acc = hand_loss(model, "test", 48)
    assert train_loss < 0.5 * before
    assert metadata["train_loss"] == pytest.approx(train_loss, rel=1e-4)
    assert metadata["train_acc"] == pytest.approx(train_acc)
    assert metadata["test_loss"] == pytest.approx(test_loss, rel=1e-4)
    assert metadata["test_acc"] == pytest.approx(test_acc)
    assert stored["train_loss"] == metadata["train_loss"]
    assert metadata["model_args"] == {"in_channels": 1, "num_classes": 10, "image_size": 8}
    assert metadata["train_spec"]["lr"] == 0.1 and metadata["seed"] == 0
    assert {"torch", "landscape", "python"} <= set(metadata["versions"])
    assert metadata["wall_time_s"] > 0 and len(metadata["history"]) == 5
    assert not partial_path(out).exists()


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    train_model(spec(), full)

    resumed = tmp_path / "resumed.pt"
    done: list[int] = []
    with pytest.raises(CancelledError, match="epoch 2"):
        train_model(
            spec(), resumed, on_epoch=lambda r: done.append(r["epoch"]),
            should_stop=lambda: len(done) >= 2,
        )  # fmt: skip
    assert not resumed.exists() and partial_path(resumed).exists()
    epochs_after: list[int] = []
    metadata = train_model(spec(), resumed, on_epoch=lambda r: epochs_after.append(r["epoch"]))
    assert epochs_after == [3]  # continued at the right epoch
    assert not partial_path(resumed).exists()
    a, _ = load_checkpoint(full)
    b, _ = load_checkpoint(resumed)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert [h["epoch"] for h in metadata["history"]] == [1, 2, 3]


def test_partial_state_of_another_recipe_or_damaged(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    with pytest.raises(CancelledError):
        train_model(spec(model="mlp-plain"), out, should_stop=lambda: True)
    assert partial_path(out).exists() is False  # stopped before the first epoch finished
    with pytest.raises(CancelledError):
        train_model(spec(model="mlp-plain"), out, on_epoch=lambda r: None, should_stop=_after(1))
    with pytest.raises(SpecError, match="different training recipe"):
        train_model(spec(model="mlp-plain", lr=0.01), out)
    partial_path(out).write_bytes(b"not a state")
    with pytest.raises(CheckpointError, match=r"m\.pt\.partial"):
        train_model(spec(model="mlp-plain"), out)


def _after(n: int) -> Any:
    calls = {"epochs": 0}

    def should_stop() -> bool:
        calls["epochs"] += 1
        return calls["epochs"] > n * 3 + 1  # 3 batches per epoch: stop early in epoch 2

    return should_stop


def test_snapshots_every_n_epochs(tmp_path: Path) -> None:
    out = tmp_path / "run.pt"
    train_model(spec(model="mlp-plain", snapshot_every=2), out)
    folder = snapshot_dir(out)
    assert folder == tmp_path / "run.snapshots"
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_000.pt",
        "epoch_002.pt",
        "epoch_003.pt",
    ]
    last, meta = load_checkpoint(folder / "epoch_003.pt")
    final, _ = load_checkpoint(out)
    assert meta["epoch"] == 3
    for key, value in final.state_dict().items():
        assert torch.equal(value, last.state_dict()[key])
    first, _ = load_checkpoint(folder / "epoch_000.pt")
    assert not torch.equal(first.state_dict()["head.weight"], final.state_dict()["head.weight"])


def test_bad_specs_fail_before_work(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="resnet20"):
        train_model(spec(model="resnet21"), tmp_path / "x.pt")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="cuda"):
            train_model(spec(device="cuda"), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("schedule", ["step", "constant"])
def test_optimizers_and_schedules_run(tmp_path: Path, optimizer: str, schedule: str) -> None:
    lr = 0.01 if optimizer == "adam" else 0.1
    metadata = train_model(
        spec(model="mlp-residual", optimizer=optimizer, schedule=schedule, lr=lr, epochs=4),
        tmp_path / "m.pt",
    )
    lrs = [h["lr"] for h in metadata["history"]]
    expected = [lr] * 4 if schedule == "constant" else [lr, lr, lr * 0.1, lr * 0.01]
    assert lrs == pytest.approx(expected)
    assert metadata["history"][-1]["train_loss"] < metadata["history"][0]["train_loss"]


def test_warmup_trains_at_a_tenth_then_follows_the_schedule() -> None:
    from landscape.train import _scheduler

    spec = TrainSpec(model="mlp-plain", epochs=5, warmup_epochs=2, schedule="cosine")
    weights = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(weights, lr=0.1)
    scheduler = _scheduler(spec, optimizer)
    rates = []
    for _ in range(spec.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # two warm-up epochs at lr/10, then a cosine over the remaining three from the full lr
    expected = [0.01, 0.01, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 3)), 0.1 * 0.25]
    assert rates == pytest.approx(expected)


def test_warmup_must_leave_epochs_to_train() -> None:
    with pytest.raises(SpecError, match="warmup_epochs"):
        TrainSpec(model="mlp-plain", epochs=3, warmup_epochs=3)
