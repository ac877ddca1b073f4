"""A data split as equal-shaped batches on the device: equal shapes mean one compiled graph,
and padded samples are masked out of the sums, so they change nothing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SplitBatches:
    """One split's data as equal-shaped batches on the device; ``mask`` marks real samples."""

    xs: list[Tensor]
    ys: list[Tensor]
    masks: list[Tensor]
    n: int

    @property
    def size(self) -> int:
        """Samples per batch (padding included)."""
        return int(self.xs[0].shape[0])


def split_batches(
    x: Tensor, y: Tensor, batch_size: int, device: torch.device, channels_last: bool
) -> SplitBatches:
    """Cut ``(x, y)`` into batches of equal size (≤ ``batch_size``), the last one padded."""
    n = x.shape[0]
    n_batches = max(1, -(-n // batch_size))
    size = -(-n // n_batches)  # balanced: padding is < n_batches samples in all
    xs, ys, masks = [], [], []
    for start in range(0, n, size):
        xb, yb = x[start : start + size], y[start : start + size]
        pad = size - xb.shape[0]
        mask = torch.ones(size, dtype=torch.bool)
        if pad:
            xb = torch.cat([xb, xb.new_zeros((pad, *xb.shape[1:]))])
            yb = torch.cat([yb, yb.new_zeros(pad)])
            mask[size - pad :] = False
        xb = xb.to(device=device, dtype=torch.float32)
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        xs.append(xb)
        ys.append(yb.to(device))
        masks.append(mask.to(device))
    return SplitBatches(xs, ys, masks, n)


def halve_batches(batches: SplitBatches) -> SplitBatches:
    """The same samples in batches of half the size (rounded up), after an out-of-memory error.

    Halves are views of the batches already on the device; only an odd-sized batch's second
    half is copied, to pad it with one masked sample. Halves holding only padding are dropped:
    real samples are the first ``n`` (only the last batch is padded), so this needs no look at
    the device's masks.
    """
    size = batches.size
    half = -(-size // 2)
    xs, ys, masks = [], [], []
    for i, (x, y, m) in enumerate(zip(batches.xs, batches.ys, batches.masks, strict=True)):
        real = min(size, batches.n - i * size)
        for lo in (0, half):
            if lo >= real:
                continue
            xh, yh, mh = x[lo : lo + half], y[lo : lo + half], m[lo : lo + half]
            pad = half - xh.shape[0]
            if pad:
                fmt = (
                    torch.channels_last
                    if xh.dim() == 4 and xh.is_contiguous(memory_format=torch.channels_last)
                    else torch.contiguous_format
                )
                xh = torch.cat([xh, xh.new_zeros((pad, *xh.shape[1:]))])
                xh = xh.contiguous(memory_format=fmt)
                yh = torch.cat([yh, yh.new_zeros(pad)])
                mh = torch.cat([mh, mh.new_zeros(pad)])
            xs.append(xh)
            ys.append(yh)
            masks.append(mh)
    return SplitBatches(xs, ys, masks, batches.n)


def to_device(batches: SplitBatches, device: torch.device) -> SplitBatches:
    """The batches on ``device`` (a no-op where they already are; memory format kept)."""
    return SplitBatches(
        [x.to(device) for x in batches.xs],
        [y.to(device) for y in batches.ys],
        [m.to(device) for m in batches.masks],
        batches.n,
    )
