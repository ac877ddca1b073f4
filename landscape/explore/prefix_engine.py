"""The engine's prefix form: at K grid points per call, the running sums of one slice of a
split's shared permutation, against the centre's per-sample values, on the device.

It prepares as the surface engine does (eval-mode BN folded into weights and directions,
batch size from the device's memory, the data on the device once, in permutation order) and
evaluates with the engine's own forward (``landscape.engine.forward.losses_at``), so a point
carried to ``n = N`` is the full-pass value. Per batch it adds ``Σd, Σd², Σd·u`` of the loss
and of the correct flags (``d = v − u``, float64) per stratum (``index_add_`` over the
samples' strata) to sums kept on the device; a group of K points crosses to the host once per
slice.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.engine.bn_fold import fold_batchnorm
from landscape.engine.devices import denormals_flushed, resolve_device
from landscape.engine.forward import losses_at
from landscape.engine.plan import pick_batch_size, resolve_precision
from landscape.engine.precision import compute_in
from landscape.explore.estimator import Centre, n_sums
from landscape.losses import Loss, resolve_loss
from landscape.specs import EngineOptions

CUDA_POINTS_PER_CALL = 8  # K on a GPU (vmap), as the surface engine's largest candidate


class PrefixEvaluator:
    """Sums of grid points over slices of each split's permutation (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        directions: list[Mapping[str, Tensor]],
        data: Mapping[str, tuple[Tensor, Tensor]],
        permutations: Mapping[str, np.ndarray],
        strata: Mapping[str, np.ndarray],
        *,
        loss: str | Loss = "cross_entropy",
        options: EngineOptions | None = None,
    ) -> None:
        options = options or EngineOptions()
        self.loss = resolve_loss(loss)
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options, self.device)
        module = copy.deepcopy(model).cpu().eval()
        params = {n: p.detach().to(torch.float32) for n, p in module.named_parameters()}
        dirs = [{n: d[n].detach().to("cpu", torch.float32) for n in params} for d in directions]
        folded = None if self.loss.sees_model else fold_batchnorm(module, params, dirs)
        if folded is not None:
            module, params, dirs = folded.module, folded.params, folded.directions
        self.module = module.to(self.device)
        self.batch_size = options.batch_size or pick_batch_size(module, data, self.device)
        self.threads = options.workers or 1
        self.points_per_call = options.points_per_call or (
            CUDA_POINTS_PER_CALL if self.device.type == "cuda" else 1
        )
        moving = [n for n in params if any(bool(d[n].any()) for d in dirs)]
        self.static = {n: params[n].to(self.device) for n in params if n not in moving}
        self.base = {n: params[n].to(self.device) for n in moving}
        self.stacked = {n: torch.stack([d[n] for d in dirs]).to(self.device) for n in moving}
        self.ndim = len(dirs)
        self.data = {
            split: (x[torch.as_tensor(permutations[split])].to(self.device),
                    y[torch.as_tensor(permutations[split])].to(self.device))
            for split, (x, y) in data.items()
        }  # fmt: skip
        # each sample's stratum (``estimator.strata_of``, given in the data's order), permuted
        self.strata = {s: np.asarray(strata[s])[permutations[s]] for s in self.data}
        self.strata_on_device = {
            s: torch.as_tensor(h, device=self.device) for s, h in self.strata.items()
        }
        self.centre_values: dict[str, tuple[Tensor, Tensor]] = {}
        self.samples = 0  # samples evaluated at grid points (K points × slice length)
        self.host_syncs = 0
        self.eval_s = 0.0

    # -- the centre ---------------------------------------------------------------------------
    def centre(self) -> dict[str, Centre]:
        """θ's per-sample loss and correct flag over every split, in permutation order."""
        out = {}
        zeros = np.zeros((1, self.ndim))
        for split, (x, _) in self.data.items():
            loss, correct = self._per_sample(zeros, split, 0, len(x))
            out[split] = Centre(loss=loss[0], correct=correct[0], stratum=self.strata[split])
        self.samples += sum(len(x) for x, _ in self.data.values())
        return out

    def set_centre(self, centre: Mapping[str, Centre]) -> None:
        self.centre_values = {
            s: (torch.as_tensor(c.loss, device=self.device),
                torch.as_tensor(c.correct, device=self.device))
            for s, c in centre.items()
        }  # fmt: skip

    # -- grid points ----------------------------------------------------------------------------
    def sums(self, coords: np.ndarray, split: str, start: int, stop: int) -> np.ndarray:
        """``(P, n_sums)`` float64: the sums of samples ``start:stop`` of ``split`` at each row
        of ``coords`` (one look), in groups of K points per call."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, self.ndim)
        out = np.zeros((len(coords), n_sums(self._n_strata(split))))
        began = time.perf_counter()
        for lo in range(0, len(coords), self.points_per_call):
            group = coords[lo : lo + self.points_per_call]
            out[lo : lo + len(group)] = self._group_sums(group, split, start, stop)
        self.samples += len(coords) * (stop - start)
        self.eval_s += time.perf_counter() - began
        return out

    def _group_sums(self, coords: np.ndarray, split: str, start: int, stop: int) -> np.ndarray:
        u_loss, u_correct = self.centre_values[split]
        x, y = self.data[split]
        strata, n_strata = self.strata_on_device[split], self._n_strata(split)
        # (K, metric × statistic, stratum), in the order of estimator.columns
        total = torch.zeros(len(coords), 6, n_strata, dtype=torch.float64, device=self.device)
        with self._computing():
            moving = self._params_at(coords)
            for a in range(start, stop, self.batch_size):
                b = min(stop, a + self.batch_size)
                per, correct = self._forward(moving, x[a:b], y[a:b])
                h = strata[a:b]
                for k, (v, u) in enumerate(((per, u_loss[a:b]), (correct, u_correct[a:b]))):
                    d = v.double() - u
                    total[:, 3 * k].index_add_(1, h, d)
                    total[:, 3 * k + 1].index_add_(1, h, d * d)
                    total[:, 3 * k + 2].index_add_(1, h, d * u)
        self.host_syncs += 1
        host = total.reshape(len(coords), -1).cpu().numpy()
        lead = np.tile([float(stop - start), 1.0], (len(coords), 1))  # n, one look
        return np.concatenate([lead, host], axis=1)

    def _n_strata(self, split: str) -> int:
        strata = self.strata[split]
        return int(strata.max()) + 1 if strata.size else 1

    def _per_sample(
        self, coords: np.ndarray, split: str, start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.data[split]
        losses, flags = [], []
        with self._computing():
            moving = self._params_at(coords)
            for a in range(start, stop, self.batch_size):
                b = min(stop, a + self.batch_size)
                per, correct = self._forward(moving, x[a:b], y[a:b])
                losses.append(per.double())
                flags.append(correct.double())
        self.host_syncs += 1
        return torch.cat(losses, 1).cpu().numpy(), torch.cat(flags, 1).cpu().numpy()

    def _params_at(self, coords: np.ndarray) -> dict[str, Tensor]:
        """The moving parameters at each point, with a leading K dimension."""
        c = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
        return {
            n: base.unsqueeze(0) + torch.einsum("kj,j...->k...", c, self.stacked[n])
            for n, base in self.base.items()
        }

    def _forward(self, moving: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample losses and correct flags, each ``(K, B)``."""
        k = next(iter(moving.values())).shape[0] if moving else 1

        def one(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            per, logits = losses_at(self.module, self.loss, {**self.static, **p}, x, y)
            return per.float(), (logits.argmax(dim=-1) == y).float()

        if k == 1:
            per, correct = one({n: t[0] for n, t in moving.items()})
            return per.unsqueeze(0), correct.unsqueeze(0)
        out: tuple[Tensor, Tensor] = torch.vmap(one)(moving)
        return out

    @contextlib.contextmanager
    def _computing(self) -> Iterator[None]:
        """The engine's precision policy, autograd off, subnormals flushed; on CPU
        ``self.threads`` intra-op threads (the engine's workers run one each: several threads
        on one process measured up to 20× slower on a shared machine), restored after."""
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            with (
                compute_in(self.precision, self.device),
                torch.inference_mode(),
                denormals_flushed(),
            ):
                yield
        finally:
            torch.set_num_threads(threads)

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "points_per_call": self.points_per_call,
            "batch_size": self.batch_size,
            "threads": self.threads if self.device.type == "cpu" else None,
            "method": "prefix sums" + (" + vmap" if self.points_per_call > 1 else ""),
            "samples": self.samples,
            "host_syncs": self.host_syncs,
            "eval_s": self.eval_s,
        }
