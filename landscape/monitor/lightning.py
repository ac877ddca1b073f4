"""The monitor as a PyTorch Lightning callback: ``Trainer(callbacks=[LandscapeCallback(m)])``.

It measures once before the first batch (step 0) and then after every training batch whose
``trainer.global_step`` (optimizer steps so far) is a multiple of the monitor's ``every``,
on the LightningModule itself (its ``forward`` must give logits, or the monitor is given
``forward=``) and with 2/η from the trainer's first optimizer. Needs ``lightning`` (the
``lightning`` extra) or the older ``pytorch_lightning``.
"""

from __future__ import annotations

from typing import Any

from landscape.monitor.monitor import Monitor

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the package's older name
    from pytorch_lightning.callbacks import Callback


class LandscapeCallback(Callback):  # type: ignore[misc]
    """Calls ``monitor.step`` every ``monitor.every`` optimizer steps of a Lightning fit."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self.monitor = monitor
        self._last: int | None = None  # accumulated batches share a global step: measure once

    def _step(self, trainer: Any, module: Any) -> None:
        step = int(trainer.global_step)
        if step == self._last:
            return
        self._last = step
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.monitor.step(module, step, optimizer)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._step(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._step(trainer, pl_module)
