"""The engine's prefix form: at K grid points per call, the running sums of one slice of a
split's shared permutation, against the centre's per-sample values, on the device.

It prepares as the surface engine does (eval-mode BN folded into weights and directions,
batch size from the device's memory, the data on the device once, in permutation order) and
evaluates with the engine's own forward (``landscape.engine.forward.losses_at``), so a point
carried to ``n = N`` is the full-pass value. Per batch it adds ``Σd, Σd², Σd·u`` of the loss
and of the correct flags (``d = v − u``, float64) per stratum (``index_add_`` over the
samples' strata) to sums kept on the device; a group of K points crosses to the host once per
slice. On CPU the calls run on as many threads ("lanes") as the exact engine has worker
processes, each with one intra-op thread and its own copy of the module.

A call of one point writes the point's weights into its lane's module and calls the module
itself: ``functional_call``'s swap of every parameter costs a third of the forward of a small
net's 256-sample slice.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.engine.bn_fold import fold_batchnorm
from landscape.engine.devices import denormals_flushed, resolve_device
from landscape.engine.forward import losses_at
from landscape.engine.plan import cpu_count, pick_batch_size, resolve_precision
from landscape.engine.precision import compute_in
from landscape.explore.estimator import Centre, n_sums
from landscape.losses import Loss, resolve_loss
from landscape.specs import EngineOptions

CUDA_POINTS_PER_CALL = 8  # K on a GPU (vmap), as the surface engine's largest candidate
# CPU: short slices go K = 8 per call (vmap) on nets without convolutions, when two or more
# lanes contend for the GIL; long slices, and every slice of a conv net, one point per call.
# A short slice's per-call Python overhead holds the GIL, and one vmap call spends it once for
# eight points; but vmap turns a conv into a grouped conv. Measured with two lanes on a
# 2-core AMD EPYC, K = 8 against K = 1 (M samples/s): mlp-plain on MNIST-1D, 256-sample
# slices 0.40 vs 0.22, 1,024: 0.53 vs 0.44, 16,384: 0.51 vs 0.70; mlp-plain on digits, 256:
# 0.28 vs 0.18, 1,024: 0.31 vs 0.47; resnet20 on digits, 256: 0.011 vs 0.024. A rule, not a
# timing taken at run time, so a resumed run computes what an uninterrupted one does.
CPU_SHORT_SLICE = 512
CPU_SHORT_SLICE_POINTS = 8
Call = tuple[np.ndarray, int, int]  # rows of coords, and the slice start:stop they read
Pair = tuple[Tensor, Tensor]


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _shares(calls: list[Call], lanes: int) -> list[list[Call]]:
    """``calls`` dealt to ``lanes`` lists of about equal work (samples × points), largest
    first: each lane takes its module once for its whole list, not once per call."""
    shares: list[list[Call]] = [[] for _ in range(max(1, lanes))]
    work = [0] * len(shares)
    for call in sorted(calls, key=lambda c: -(c[2] - c[1]) * len(c[0])):
        lane = work.index(min(work))
        shares[lane].append(call)
        work[lane] += (call[2] - call[1]) * len(call[0])
    return [share for share in shares if share]


class _Lane:
    """One lane's module and, when it computes in place, its parameter tensors by name."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.slots: dict[str, Tensor] = {}

    def take(self, static: Mapping[str, Tensor], moving: list[str]) -> bool:
        """Hold the module's own tensors of ``static`` (set to those values once) and of
        ``moving``; False, holding none, when one is not a float32 parameter of it."""
        own = dict(self.module.named_parameters())
        names = [*static, *moving]
        if any(n not in own or own[n].dtype != torch.float32 for n in names):
            return False
        with torch.no_grad():
            for n in names:
                own[n].requires_grad_(False)
            for n, value in static.items():
                own[n].copy_(value)
        self.slots = {n: own[n] for n in moving}
        return True

    def place(self, moving: Mapping[str, Tensor]) -> None:
        """The module's moving parameters set to one point's (``moving``: a leading K of 1)."""
        for n, slot in self.slots.items():
            slot.copy_(moving[n][0])


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
        # copies: a lane that computes in place writes its module's own parameters
        params = {n: p.detach().to(torch.float32, copy=True) for n, p in module.named_parameters()}
        dirs = [{n: d[n].detach().to("cpu", torch.float32) for n in params} for d in directions]
        folded = None if self.loss.sees_model else fold_batchnorm(module, params, dirs)
        if folded is not None:
            module, params, dirs = folded.module, folded.params, folded.directions
        module = module.to(self.device)
        self.batch_size = options.batch_size or pick_batch_size(module, data, self.device)
        # CPU: calls on as many threads as the exact engine has worker processes
        self.lanes = (options.workers or cpu_count()) if self.device.type == "cpu" else 1
        lanes = [_Lane(module if i == 0 else copy.deepcopy(module)) for i in range(self.lanes)]
        self.points_per_call = options.points_per_call or (
            CUDA_POINTS_PER_CALL if self.device.type == "cuda" else 1
        )
        # K on short slices: what an explicit K fixes, else the rule above
        vmap_pays = self.device.type == "cpu" and self.lanes > 1 and not _has_conv(module)
        self.short_slice_points = options.points_per_call or (
            CPU_SHORT_SLICE_POINTS if vmap_pays else self.points_per_call
        )
        moving = [n for n in params if any(bool(d[n].any()) for d in dirs)]
        self.static = {n: params[n].to(self.device) for n in params if n not in moving}
        self.base = {n: params[n].to(self.device) for n in moving}
        self.stacked = {n: torch.stack([d[n] for d in dirs]).to(self.device) for n in moving}
        # a loss of the outputs alone, and every parameter the module's own float32 tensor
        self.in_place = self.loss.of_logits is not None and all(
            lane.take(self.static, list(self.base)) for lane in lanes
        )
        self._modules: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for lane in lanes:
            self._modules.put(lane)
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
        self.centre_values: dict[str, Tensor] = {}
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
        # (2, N) float64 per split: the centre's losses and correct flags, stacked as the
        # sums want them
        self.centre_values = {
            s: torch.as_tensor(np.stack([c.loss, c.correct]), dtype=torch.float64,
                               device=self.device)
            for s, c in centre.items()
        }  # fmt: skip

    # -- grid points ----------------------------------------------------------------------------
    def sums(
        self, coords: np.ndarray, split: str, start: np.ndarray | int, stop: np.ndarray | int
    ) -> np.ndarray:
        """``(P, n_sums)`` float64: at each row of ``coords``, the sums of its samples
        ``start:stop`` of ``split`` (one look; per point or one for all). Points that share a
        slice go K per call; on CPU the calls run on ``lanes`` threads at once."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, self.ndim)
        starts = np.broadcast_to(np.asarray(start, dtype=np.int64), len(coords))
        stops = np.broadcast_to(np.asarray(stop, dtype=np.int64), len(coords))
        out = np.zeros((len(coords), n_sums(self._n_strata(split))))
        began = time.perf_counter()
        calls = []
        for a, b in sorted({(int(x), int(y)) for x, y in zip(starts, stops, strict=True)}):
            rows = np.flatnonzero((starts == a) & (stops == b))
            k = self.short_slice_points if b - a <= CPU_SHORT_SLICE else self.points_per_call
            calls += [(rows[i : i + k], a, b) for i in range(0, len(rows), k)]

        def run(share: list[Call]) -> list[np.ndarray]:
            with self._computing() as lane:
                return [self._group_sums(lane, coords[r], split, a, b) for r, a, b in share]

        shares = _shares(calls, min(self.lanes, len(calls)))
        with self._process_settings():
            if len(shares) > 1:
                with ThreadPoolExecutor(len(shares)) as pool:
                    results = list(pool.map(run, shares))
            else:
                results = [run(share) for share in shares]
        for share, result in zip(shares, results, strict=True):
            for (rows, _, _), sums in zip(share, result, strict=True):
                out[rows] = sums
        self.host_syncs += len(calls)
        self.samples += int((stops - starts).sum())
        self.eval_s += time.perf_counter() - began
        return out

    def _group_sums(
        self, lane: _Lane, coords: np.ndarray, split: str, start: int, stop: int
    ) -> np.ndarray:
        centre = self.centre_values[split]
        x, y = self.data[split]
        strata, n_strata = self.strata_on_device[split], self._n_strata(split)
        k = len(coords)
        # (K, metric × statistic, stratum), in the order of estimator.columns
        total = torch.zeros(k, 6, n_strata, dtype=torch.float64, device=self.device)
        forward = self._at(lane, coords)
        for a in range(start, stop, self.batch_size):
            b = min(stop, a + self.batch_size)
            per, correct = forward(x[a:b], y[a:b])
            u = centre[:, None, a:b]  # (metric, 1, B)
            d = torch.stack((per, correct)).double() - u  # (metric, K, B)
            stats = torch.stack((d, d * d, d * u), dim=1)  # (metric, statistic, K, B)
            # one scatter for all six sums: (K, metric × statistic, B) into the strata
            total.index_add_(2, strata[a:b], stats.permute(2, 0, 1, 3).reshape(k, 6, b - a))
        host = total.reshape(k, -1).cpu().numpy()
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
        with self._process_settings(), self._computing() as lane:
            forward = self._at(lane, coords)
            for a in range(start, stop, self.batch_size):
                b = min(stop, a + self.batch_size)
                per, correct = forward(x[a:b], y[a:b])
                losses.append(per.double())
                flags.append(correct.double())
        self.host_syncs += 1
        return torch.cat(losses, 1).cpu().numpy(), torch.cat(flags, 1).cpu().numpy()

    def _at(self, lane: _Lane, coords: np.ndarray) -> Callable[[Tensor, Tensor], Pair]:
        """The per-batch forward at the rows of ``coords``: ``(K, B)`` losses and flags."""
        moving = self._params_at(coords)  # one formula for every K: lanes sum bitwise alike
        if len(coords) == 1 and self.in_place:
            lane.place(moving)
            of_logits = self.loss.of_logits
            assert of_logits is not None

            def placed(x: Tensor, y: Tensor) -> Pair:
                logits = lane.module(x)
                per = of_logits(logits.float(), y).float()
                return per.unsqueeze(0), (logits.argmax(dim=-1) == y).float().unsqueeze(0)

            return placed
        return lambda x, y: self._forward(lane.module, moving, x, y)

    def _params_at(self, coords: np.ndarray) -> dict[str, Tensor]:
        """The moving parameters at each point, with a leading K dimension."""
        c = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
        return {
            n: base.unsqueeze(0) + torch.einsum("kj,j...->k...", c, self.stacked[n])
            for n, base in self.base.items()
        }

    def _forward(
        self, module: nn.Module, moving: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-sample losses and correct flags, each ``(K, B)``."""
        k = next(iter(moving.values())).shape[0] if moving else 1

        def one(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            per, logits = losses_at(module, self.loss, {**self.static, **p}, x, y)
            return per.float(), (logits.argmax(dim=-1) == y).float()

        if k == 1:
            per, correct = one({n: t[0] for n, t in moving.items()})
            return per.unsqueeze(0), correct.unsqueeze(0)
        out: tuple[Tensor, Tensor] = torch.vmap(one)(moving)
        return out

    @contextlib.contextmanager
    def _process_settings(self) -> Iterator[None]:
        """What is set for the whole process, around every lane: on CPU one intra-op thread
        per lane (two threads on one forward measured up to 20× slower on a shared machine
        than one each), subnormals flushed; restored after."""
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            with denormals_flushed():
                yield
        finally:
            torch.set_num_threads(threads)

    @contextlib.contextmanager
    def _computing(self) -> Iterator[_Lane]:
        """A module of its own for the calling lane (its parameters are written or swapped,
        so two lanes never share one), the precision policy, autograd off."""
        lane = self._modules.get()
        try:
            with compute_in(self.precision, self.device), torch.inference_mode():
                yield lane
        finally:
            self._modules.put(lane)

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "points_per_call": self.points_per_call,
            "short_slice_points": self.short_slice_points,
            "batch_size": self.batch_size,
            "lanes": self.lanes,
            "in_place": self.in_place,
            "method": "prefix sums"
            + (" + vmap" if max(self.points_per_call, self.short_slice_points) > 1 else ""),
            "samples": self.samples,
            "host_syncs": self.host_syncs,
            "eval_s": self.eval_s,
        }
