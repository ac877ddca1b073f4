"""Training: a ``TrainSpec`` in, a checkpoint (and optional per-epoch snapshots) out.

The data set lives on the device as two tensors and batches are index slices, so a small run
spends its time in the model, not in a DataLoader. After every epoch the full training state
(model, optimizer, schedule, RNG) goes to ``<out>.partial``; rerunning the same spec continues
from there and gives the same weights as an uninterrupted run, then removes the file.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from landscape.data import dataset_info, load_data
from landscape.divergence import diverged_training
from landscape.engine.devices import resolve_device
from landscape.engine.precision import compute_in
from landscape.errors import CancelledError, CheckpointError, SpecError, UnknownNameError
from landscape.losses import get_loss, losses_and_outputs, mean_loss
from landscape.models import build, list_models
from landscape.sources.checkpoint import read_checkpoint_file, save_checkpoint
from landscape.specs import LossName, ResolvedPrecision, TrainSpec, check_choice, to_dict

logger = logging.getLogger(__name__)

STATE_FORMAT = "landscape-train-state/1"
EVAL_BATCH = 1024
# Strict fp32 (TF32 off for convolutions and matmuls, the engine's precision policy): with
# PyTorch's default TF32 convolutions the same recipe would train other weights on an Ampere-
# or-later GPU than elsewhere (docs/performance.md: ~3e-4 relative error per forward pass).
TRAIN_PRECISION: ResolvedPrecision = "fp32"

EpochCallback = Callable[[dict[str, Any]], None]


def partial_path(out: Path) -> Path:
    """Where the resumable state of an unfinished training lives."""
    return out.with_name(out.name + ".partial")


def snapshot_dir(out: Path) -> Path:
    """``<out stem>.snapshots/`` next to the checkpoint: the trajectory for PCA directions."""
    return out.with_name(out.stem + ".snapshots")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = EVAL_BATCH,
    loss: str = "cross_entropy",
) -> tuple[float, float]:
    """Mean ``loss`` (``landscape.losses``) and accuracy in eval mode (BN running statistics)."""
    resolved = get_loss(loss)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        target = y[start : start + batch_size]
        per, logits = losses_and_outputs(resolved, model, x[start : start + batch_size], target)
        loss_sum += float(per.double().sum())
        correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return loss_sum / len(y), correct / len(y)


def _optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "gd":  # full-batch gradient descent: θ ← θ − η∇L, no momentum
        return torch.optim.SGD(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def _scheduler(
    spec: TrainSpec, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` divides by 10 at 50% and 75% of training, as He et al.
    2016 §4.2 do at 32k and 48k of 64k iterations. ``warmup_epochs`` first train at lr/10, as
    He et al. do for ResNet-110 ("0.01 to warm up the training"), then follow the schedule."""
    warmup, epochs = spec.warmup_epochs, spec.epochs
    main_epochs = max(1, epochs - warmup)
    milestones = [max(1, math.ceil(main_epochs * f)) for f in (0.5, 0.75)]

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return 0.1
        t = epoch - warmup
        if spec.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, main_epochs) / main_epochs))
        if spec.schedule == "step":
            return 0.1 ** sum(t >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _versions() -> dict[str, str]:
    import landscape

    return {
        "landscape": landscape.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _spec_json(spec: TrainSpec) -> str:
    return json.dumps(to_dict(spec), sort_keys=True)


class _Run:
    """The mutable state of one training: everything a resume needs, in one place."""

    def __init__(self, spec: TrainSpec, device: torch.device) -> None:
        info = dataset_info(spec.data.name, spec.data.data_root)
        self.model_args: dict[str, Any] = {**spec.model_args, **info.model_shape()}
        torch.manual_seed(spec.seed)
        self.model = build(spec.model, **self.model_args).to(device)
        self.optimizer = _optimizer(spec, self.model)
        self.scheduler = _scheduler(spec, self.optimizer)
        self.shuffle = torch.Generator().manual_seed(spec.seed)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.sharpness: list[dict[str, Any]] = []  # spec.sharpness_every > 0
        self.sharpness_vector: Tensor | None = None  # the warm start of the next Lanczos
        self.wall_s = 0.0

    def state(self, spec: TrainSpec) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "spec": _spec_json(spec),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "sharpness": self.sharpness,
            "sharpness_vector": self.sharpness_vector,
            "wall_s": self.wall_s,
        }

    def restore(self, state: dict[str, Any], path: Path, spec: TrainSpec) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a landscape training state; delete it to restart")
        if state["spec"] != _spec_json(spec):
            raise SpecError(
                f"{path} belongs to a different training recipe ({state['spec']}); rerun with that "
                "recipe or delete the file to start over"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.shuffle.set_state(state["shuffle_rng"])
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} is damaged ({exc}); delete it to restart") from exc
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.sharpness = list(state.get("sharpness", []))
        self.sharpness_vector = state.get("sharpness_vector")
        self.wall_s = float(state["wall_s"])


def train_model(
    spec: TrainSpec,
    out: str | Path,
    *,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train, write the checkpoint to ``out`` and return the metadata stored in it.

    ``on_epoch(record)`` gets each epoch's numbers; ``should_stop()`` true stops the run with
    ``CancelledError`` (the last finished epoch stays resumable).
    """
    out = Path(out)
    known = [info.name for info in list_models()]
    if spec.model not in known:  # fail before any data is read
        raise UnknownNameError("model", spec.model, known)
    get_loss(spec.loss)
    device = resolve_device(spec.device)
    with compute_in(TRAIN_PRECISION, device):  # PyTorch's TF32 switches as before afterwards
        return _train(spec, out, device, on_epoch, should_stop)


def _train(
    spec: TrainSpec,
    out: Path,
    device: torch.device,
    on_epoch: EpochCallback | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    x_train, y_train = load_data(spec.data, "train", device=device)
    x_test, y_test = load_data(spec.data, "test", device=device)
    run = _Run(spec, device)
    num_classes = run.model_args["num_classes"]
    if int(y_train.max()) >= num_classes:
        raise SpecError(
            f"labels go up to {int(y_train.max())} but {spec.data.name!r} has {num_classes} classes"
        )
    partial = partial_path(out)
    if partial.exists():
        run.restore(read_checkpoint_file(partial, map_location=device), partial, spec)
        logger.info("resuming %s from epoch %d", out, run.epoch)
    else:
        if spec.snapshot_every > 0:
            _snapshot(run, spec, out)  # epoch 0: the start of the trajectory
        _track_sharpness(run, spec, (x_train, y_train), device)  # step 0: where it rises from
    started = time.perf_counter() - run.wall_s
    run.model.train()
    while run.epoch < spec.epochs:
        train_loss, train_acc = _train_epoch(run, spec, x_train, y_train, should_stop)
        run.epoch += 1
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        test_loss, test_acc = evaluate(run.model, x_test, y_test, loss=spec.loss)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            partial.unlink(missing_ok=True)  # its resume would diverge again
            raise diverged_training(spec, run.epoch, train_loss, test_loss)
        run.wall_s = time.perf_counter() - started
        record = {
            "epoch": run.epoch, "epochs": spec.epochs, "lr": lr,
            "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "elapsed_s": run.wall_s,
        }  # fmt: skip
        run.history.append(record)
        if spec.snapshot_every > 0 and (
            run.epoch % spec.snapshot_every == 0 or run.epoch == spec.epochs
        ):
            _snapshot(run, spec, out)
        _track_sharpness(run, spec, (x_train, y_train), device, lr)
        if run.epoch < spec.epochs:
            _save_state(run, spec, partial)
        if on_epoch is not None:
            on_epoch(record)
        if run.epoch < spec.epochs and should_stop is not None and should_stop():
            raise CancelledError(f"training stopped after epoch {run.epoch}; rerun to resume")
    metadata = _metadata(run, spec, device, (x_train, y_train), (x_test, y_test))
    save_checkpoint(
        out, run.model, model_name=spec.model, model_args=run.model_args, metadata=metadata
    )
    partial.unlink(missing_ok=True)
    return metadata


def _train_epoch(
    run: _Run, spec: TrainSpec, x: Tensor, y: Tensor, should_stop: Callable[[], bool] | None
) -> tuple[float, float]:
    """One pass in a seeded order; returns the running (train-mode) loss and accuracy."""
    if spec.optimizer == "gd":
        return _gd_step(run, spec, x, y, should_stop)
    order = torch.randperm(len(y), generator=run.shuffle).to(x.device)
    loss_sum, correct, seen = torch.zeros((), device=x.device), torch.zeros((), device=x.device), 0
    for start in range(0, len(y), spec.batch_size):
        index = order[start : start + spec.batch_size]
        if len(index) < 2 and seen:  # BatchNorm cannot train on a single sample
            continue
        if should_stop is not None and should_stop():
            raise CancelledError(f"training stopped during epoch {run.epoch + 1}; rerun to resume")
        loss, logits = _batch_loss(spec, run.model, x[index], y[index])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        run.optimizer.step()
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(1) == y[index]).sum()
        seen += len(index)
    return float(loss_sum) / seen, float(correct) / seen


def _gd_step(
    run: _Run, spec: TrainSpec, x: Tensor, y: Tensor, should_stop: Callable[[], bool] | None
) -> tuple[float, float]:
    """One full-batch gradient step (an "epoch" of ``gd``): the gradient of the mean loss over
    the whole split, summed over chunks of ``batch_size`` (exact for nets without BatchNorm;
    BN sees per-chunk statistics); returns the loss and accuracy before the step."""
    if should_stop is not None and should_stop():
        raise CancelledError(f"training stopped at step {run.epoch + 1}; rerun to resume")
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(y), spec.batch_size):
        target = y[start : start + spec.batch_size]
        mean, logits = _batch_loss(spec, run.model, x[start : start + spec.batch_size], target)
        chunk = mean * (len(target) / len(y))
        chunk.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        loss_sum += chunk.detach()
        correct += (logits.detach().argmax(1) == target).sum()
    run.optimizer.step()
    return float(loss_sum), float(correct) / len(y)


def _batch_loss(
    spec: TrainSpec, model: nn.Module, x: Tensor, target: Tensor
) -> tuple[Tensor, Tensor]:
    """The mean training loss of a batch and the outputs: the one place training reads the
    loss (``landscape.losses``: it may see the model, a weight penalty its parameters)."""
    return mean_loss(get_loss(spec.loss), model, x, target)


def _track_sharpness(
    run: _Run,
    spec: TrainSpec,
    train: tuple[Tensor, Tensor],
    device: torch.device,
    lr: float | None = None,
) -> None:
    """Every ``sharpness_every`` steps (and at the first and last): λmax of the full-batch
    training loss, warm-started from the last eigenvector (Cohen et al. 2021 §3)."""
    every = spec.sharpness_every
    if every < 1 or (run.epoch % every and run.epoch != spec.epochs):
        return
    from landscape.analysis.sharpness import SharpnessTracker

    tracker = SharpnessTracker(train, loss=_sharpness_loss(spec), device=device)
    if run.sharpness_vector is not None:
        tracker.vector = run.sharpness_vector.numpy()
    result = tracker.measure(run.model)
    run.sharpness_vector = torch.from_numpy(result.vector)
    lr = run.optimizer.param_groups[0]["lr"] if lr is None else lr
    run.sharpness.append({
        "step": run.epoch, "lambda_max": result.lambda_max, "loss": result.loss,
        "lr": lr, "two_over_lr": 2.0 / lr, "matvecs": result.matvecs,
    })  # fmt: skip


def _sharpness_loss(spec: TrainSpec) -> LossName:
    """The loss whose Hessian is tracked: the one ``_batch_loss`` trains."""
    check_choice("loss of sharpness tracking", spec.loss, LossName)  # of the outputs alone
    return cast(LossName, spec.loss)


def _save_state(run: _Run, spec: TrainSpec, partial: Path) -> None:
    state = run.state(spec)
    tmp = partial.with_name(partial.name + ".tmp")
    partial.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    tmp.replace(partial)


def _snapshot(run: _Run, spec: TrainSpec, out: Path) -> None:
    path = snapshot_dir(out) / f"epoch_{run.epoch:03d}.pt"
    metadata = {"epoch": run.epoch, "model": spec.model, "train_spec": to_dict(spec)}
    save_checkpoint(
        path, run.model, model_name=spec.model, model_args=run.model_args, metadata=metadata
    )


def _metadata(
    run: _Run,
    spec: TrainSpec,
    device: torch.device,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """Final numbers are measured in eval mode over the whole split, not the running averages."""
    train_loss, train_acc = evaluate(run.model, *train, loss=spec.loss)
    test_loss, test_acc = evaluate(run.model, *test, loss=spec.loss)
    return {
        "model": spec.model,
        "model_args": run.model_args,
        "dataset": spec.data.name,
        "data": to_dict(spec.data),
        "train_spec": to_dict(spec),
        "seed": spec.seed,
        "epochs": spec.epochs,
        "train_samples": len(train[1]),
        "test_samples": len(test[1]),
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "history": run.history,
        **({"sharpness": run.sharpness} if spec.sharpness_every > 0 else {}),
        "device": str(device),
        "precision": TRAIN_PRECISION,
        "versions": _versions(),
        "wall_time_s": run.wall_s,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
