"""Recurrent nets reading an image row by row: the identity path through *time*.

The image is a sequence of its rows (digits: 8 steps of 8·C pixels; MNIST: 28 of 28), the
classifier a linear layer on the last hidden state: row-by-row sequential MNIST (Le et al.
2015 read it a pixel at a time, 784 steps). ``pixels_per_step=p`` reads ``p`` consecutive
pixels of the row-major flattened image per step instead (``p`` must divide ``H·W``; 0, the
default, is one row, ``p = W``): digits with ``p = 2`` is 32 steps, ``p = 1`` 64, MNIST with
``p = 1`` the 784 of Le et al., long enough for the RNN's gradient to vanish through time.
Three cells, one hidden size:

- ``rnn``: ``h_t = tanh(W_ih x_t + W_hh h_{t−1} + b)``. Every step multiplies the gradient
  by ``W_hhᵀ·diag(1 − h_t²)``, so it vanishes or explodes over time (Bengio et al. 1994): the
  member with no identity path.
- ``lstm`` (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000): the
  cell state ``c_t = f_t⊙c_{t−1} + i_t⊙g_t`` is an identity path through time (the "constant
  error carousel") that the gates only scale and add to; ``h_t = o_t⊙tanh(c_t)``. The
  forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz et al. 2015), so the carousel
  starts mostly open, as a highway gate starts mostly carrying.
- ``gru`` (Cho et al. 2014): ``h_t = z_t⊙h_{t−1} + (1 − z_t)⊙n_t``, the highway layer's
  carry ``T·H + (1 − T)·x`` (Srivastava et al. 2015) across time instead of depth.

All three have the same modules: ``cell.ih`` (input → gates), ``cell.hh`` (state → gates)
and ``head``. The identity path *is* the gates, so the twins differ in the rows of ``ih`` and
``hh``: ``hidden`` for the RNN, ``3·hidden`` for the GRU (reset, update, candidate), ``4·hidden``
for the LSTM (input, forget, candidate, output). The cells are written out as ``nn.Linear``
layers and a Python loop over the steps, not ``nn.LSTM``/``nn.GRU``: cuDNN's fused RNN kernels
have no double backward (the Hessian), and ``torch.vmap`` and ONNX export see them as opaque.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model

CellKind = Literal["rnn", "lstm", "gru"]
GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}  # blocks of ``hidden`` rows in ih, hh
DEFAULT_HIDDEN = 128
# bounds of the model arguments: hidden as the MLPs' width; pixels_per_step 0 (one row) or
# a divisor of the pixel count (checked by the net), CIFAR's 1024 pixels and more
ARG_RANGES = {"hidden": (1, 1024), "pixels_per_step": (0, 4096)}
State = tuple[Tensor, ...]  # (h,) or (h, c); h first


class RecurrentCell(nn.Module):
    """One step: ``(x_t, state) → state`` with ``state[0]`` the hidden state ``h_t``.

    ``landscape.analysis.gradient_flow`` hooks this class to measure ``‖∂L/∂h_t‖`` per step.
    """

    def __init__(self, kind: CellKind, in_features: int, hidden: int) -> None:
        super().__init__()
        self.kind, self.hidden = kind, hidden
        self.ih = nn.Linear(in_features, GATES[kind] * hidden)
        self.hh = nn.Linear(hidden, GATES[kind] * hidden)
        if kind == "lstm":
            with torch.no_grad():  # forget-gate bias 1, split between the two layers
                self.ih.bias[hidden : 2 * hidden].fill_(0.5)
                self.hh.bias[hidden : 2 * hidden].fill_(0.5)

    def initial_state(self, x: Tensor) -> State:
        """Zeros, batch size of ``x`` (``(B, steps, features)``)."""
        h = x.new_zeros((x.shape[0], self.hidden))
        return (h, h) if self.kind == "lstm" else (h,)

    def forward(self, x: Tensor, state: State) -> State:
        h = state[0]
        if self.kind == "rnn":
            return (torch.tanh(self.ih(x) + self.hh(h)),)
        if self.kind == "lstm":
            i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            return (torch.sigmoid(o) * torch.tanh(c), c)
        xr, xz, xn = self.ih(x).chunk(3, dim=1)  # GRU: the reset gate scales hh's candidate
        hr, hz, hn = self.hh(h).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (z * h + (1 - z) * torch.tanh(xn + r * hn),)


def steps_of(image_size: int, pixels_per_step: int) -> int:
    """Time steps for ``pixels_per_step`` pixels a step (0: one row, so ``image_size``)."""
    pixels = image_size * image_size
    if not isinstance(pixels_per_step, int) or isinstance(pixels_per_step, bool):
        raise SpecError(f"pixels_per_step must be an integer, got {pixels_per_step!r}")
    if pixels_per_step == 0:
        return image_size
    if pixels_per_step < 0 or pixels % pixels_per_step:
        valid = [d for d in range(1, pixels + 1) if pixels % d == 0]
        raise SpecError(
            f"pixels_per_step {pixels_per_step} does not divide the {image_size}×{image_size} "
            f"image's {pixels} pixels; valid values: 0 (one row, the default) or one of "
            f"{', '.join(map(str, valid))}"
        )
    return pixels // pixels_per_step


class RowRecurrentNet(nn.Module):
    """Rows (or ``pixels_per_step`` pixels) as steps → one recurrent cell → Linear on the last
    hidden state."""

    def __init__(
        self,
        kind: CellKind,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: int,
        pixels_per_step: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(hidden, int) or hidden < 1:
            raise SpecError(f"recurrent hidden size must be an integer >= 1, got {hidden!r}")
        self.channels = in_channels
        self.steps = steps_of(image_size, pixels_per_step)
        self.pixels_per_step = image_size * image_size // self.steps
        self.features = in_channels * self.pixels_per_step
        self.cell = RecurrentCell(kind, self.features, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def sequence(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, steps, C·p): step ``t`` is pixels ``t·p … (t+1)·p − 1`` of the
        row-major flattened image, its channels side by side (channel 0's ``p`` pixels, then
        channel 1's, …; with ``p = W`` row ``t`` as ``C·W``)."""
        x = x.reshape(-1, self.channels, self.steps, self.pixels_per_step)
        return x.permute(0, 2, 1, 3).reshape(-1, self.steps, self.features)

    def forward(self, x: Tensor) -> Tensor:
        seq = self.sequence(x)
        state = self.cell.initial_state(seq)
        for t in range(self.steps):  # a fixed unrolled loop: traceable, vmappable, exportable
            state = self.cell(seq[:, t], state)
        logits: Tensor = self.head(state[0])
        return logits


def _register(kind: CellKind, description: str) -> None:
    @register_model(kind, description, arg_ranges=ARG_RANGES)
    def builder(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: int = DEFAULT_HIDDEN,
        pixels_per_step: int = 0,
    ) -> nn.Module:
        return RowRecurrentNet(
            kind,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            hidden=hidden,
            pixels_per_step=pixels_per_step,
        )


_register(
    "rnn",
    "tanh RNN over image rows (hidden, pixels_per_step): no identity path; the twin of lstm "
    "and gru",
)
_register(
    "lstm",
    "LSTM over image rows, cell state as identity path through time (Hochreiter & "
    "Schmidhuber 1997; hidden, pixels_per_step); plain twin rnn",
)
_register(
    "gru",
    "GRU over image rows, update gate z·h + (1−z)·n as carry (Cho et al. 2014; hidden, "
    "pixels_per_step); plain twin rnn",
)
