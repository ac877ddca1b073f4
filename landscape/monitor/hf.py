"""The monitor as a Hugging Face ``TrainerCallback``:
``Trainer(..., callbacks=[LandscapeCallback(monitor)])``.

It measures once before training (step 0) and after every optimizer step whose
``state.global_step`` is a multiple of the monitor's ``every``, on the trainer's model with
2/η from its optimizer. Hugging Face models return an output object, not logits: give the
monitor ``forward=lambda model, x: model(input_ids=x).logits`` (or whatever the model takes).
Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from landscape.monitor.monitor import Monitor


class LandscapeCallback(TrainerCallback):  # type: ignore[misc]
    """Calls ``monitor.step`` every ``monitor.every`` optimizer steps of a ``Trainer``."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._last: int | None = None

    def _step(self, state: Any, model: Any, optimizer: Any) -> None:
        step = int(state.global_step)
        if model is None or step == self._last:
            return
        self._last = step
        self.monitor.step(model, step, optimizer)

    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        self._step(state, model, optimizer)

    def on_step_end(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        self._step(state, model, optimizer)
