"""Weight matching: permute one net's hidden units onto another's (Ainsworth et al. 2022, §3.2).

Two nets trained from different seeds compute nearly the same function with their hidden units
in different orders; the straight line between them then crosses nets whose units are mixed,
and its barrier measures the ordering as much as the landscape. Permuting the units of a
hidden layer (rows of the weights into it, columns of the weights out of it) leaves the
function unchanged, so θ₂ can first be moved to the ordering closest to θ₁'s.

Weight matching maximizes ``Σ_ℓ ⟨W_ℓ^A, P_ℓ W_ℓ^B P_{ℓ−1}ᵀ⟩`` by coordinate ascent: one
permutation at a time, the others fixed, is a linear assignment problem
(``scipy.optimize.linear_sum_assignment``), repeated in a random order until no permutation
improves (their Algorithm 1). Which axes a permutation acts on is a ``PermutationSpec``
(``landscape.analysis.permutation_specs`` builds them for the zoo and aligns states), so the
algorithm knows nothing of layers: a residual stream is one permutation acting on many
tensors, and a zero-padded shortcut lets one act on part of an axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

State = dict[str, Tensor]
Permutations = dict[str, np.ndarray]

MAX_ROUNDS = 100  # passes over every permutation; matching usually settles in under ten


@dataclass(frozen=True)
class Axis:
    """Where a permutation acts: axis ``axis`` of state entry ``key``, at ``positions`` (all
    of the axis when ``None``). ``counts``: part of the matching objective (parameters);
    buffers such as BN running statistics are permuted along but not matched on."""

    key: str
    axis: int
    positions: tuple[int, ...] | None = None
    counts: bool = True


PermutationSpec = dict[str, list[Axis]]  # permutation name → the axes it acts on


def _positions(axis: Axis, state: Mapping[str, Tensor]) -> Tensor:
    if axis.positions is None:
        return torch.arange(state[axis.key].shape[axis.axis])
    return torch.tensor(axis.positions, dtype=torch.long)


def permutation_sizes(spec: PermutationSpec, state: Mapping[str, Tensor]) -> dict[str, int]:
    """Each permutation's size; its axes must agree on it."""
    sizes: dict[str, int] = {}
    for name, axes in spec.items():
        found = {len(_positions(a, state)) for a in axes}
        assert len(found) == 1, f"permutation {name!r} acts on axes of sizes {sorted(found)}"
        sizes[name] = found.pop()
    return sizes


def _permute_entry(
    key: str,
    tensor: Tensor,
    by_key: Mapping[str, list[tuple[str, Axis]]],
    perms: Permutations,
    skip: str | None = None,
) -> Tensor:
    """``tensor`` with every permutation acting on it applied (but ``skip``): the entry at
    ``positions[i]`` becomes the one at ``positions[perm[i]]``."""
    for name, axis in by_key.get(key, []):
        if name == skip:
            continue
        positions = _positions(axis, {key: tensor})
        index = torch.arange(tensor.shape[axis.axis])
        index[positions] = positions[torch.from_numpy(perms[name])]
        tensor = tensor.index_select(axis.axis, index.to(tensor.device))
    return tensor


def _by_key(spec: PermutationSpec) -> dict[str, list[tuple[str, Axis]]]:
    by_key: dict[str, list[tuple[str, Axis]]] = {}
    for name, axes in spec.items():
        for axis in axes:
            by_key.setdefault(axis.key, []).append((name, axis))
    return by_key


def permute_state(state: Mapping[str, Tensor], spec: PermutationSpec, perms: Permutations) -> State:
    """``state`` with its hidden units permuted by ``perms``: the same function."""
    by_key = _by_key(spec)
    return {k: _permute_entry(k, v, by_key, perms) for k, v in state.items()}


def random_permutations(
    spec: PermutationSpec, state: Mapping[str, Tensor], seed: int
) -> Permutations:
    rng = np.random.default_rng(seed)
    return {name: rng.permutation(n) for name, n in permutation_sizes(spec, state).items()}


def _rows(tensor: Tensor, axis: Axis) -> Tensor:
    """The slices of ``tensor`` at the axis' positions, one flattened row each (float64)."""
    moved = tensor.detach().double().movedim(axis.axis, 0)
    return moved[_positions(axis, {axis.key: tensor}).to(moved.device)].reshape(
        len(_positions(axis, {axis.key: tensor})), -1
    )


def _cost(
    name: str,
    spec: PermutationSpec,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    by_key: Mapping[str, list[tuple[str, Axis]]],
    perms: Permutations,
) -> np.ndarray:
    """``C[i, j]``: the objective's gain from putting B's unit ``j`` in A's unit ``i``'s place,
    every other permutation held where it is."""
    n = len(perms[name])
    cost = torch.zeros(n, n, dtype=torch.float64)
    for axis in spec[name]:
        if not axis.counts:
            continue
        b_entry = _permute_entry(axis.key, b[axis.key], by_key, perms, skip=name)
        cost += (_rows(a[axis.key], axis) @ _rows(b_entry, axis).T).cpu()
    result: np.ndarray = cost.numpy()
    return result


def weight_matching(
    spec: PermutationSpec,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    *,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[Permutations, int]:
    """The permutations of ``b``'s units that bring it closest to ``a`` (Ainsworth et al.
    2022, Algorithm 1), and the rounds it took; ``permute_state(b, spec, perms)`` applies
    them."""
    by_key = _by_key(spec)
    perms = {name: np.arange(n) for name, n in permutation_sizes(spec, a).items()}
    rng = np.random.default_rng(seed)
    names = sorted(spec)
    for rounds in range(1, max_rounds + 1):
        improved = False
        for index in rng.permutation(len(names)):
            name = names[int(index)]
            cost = _cost(name, spec, a, b, by_key, perms)
            _, best = linear_sum_assignment(cost, maximize=True)
            rows = np.arange(len(best))
            old, new = cost[rows, perms[name]].sum(), cost[rows, best].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[name], improved = best, True
        if not improved:
            return perms, rounds
    return perms, max_rounds
