"""The prefix engine's on-device sums against per-sample values of a plain forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.data import load_data
from landscape.directions import make_directions
from landscape.explore.estimator import point_sums
from landscape.explore.permutation import split_permutation
from landscape.explore.prefix_engine import PrefixEvaluator
from landscape.explore.run import split_strata
from landscape.models import build
from landscape.specs import DataSpec, DirectionSpec, EngineOptions

MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 16}


def _plain_per_sample(model: torch.nn.Module, dirs: list, point: np.ndarray, x, y):  # type: ignore[no-untyped-def]
    """Per-sample loss and correct flag with the point's weights copied into a model copy."""
    import copy

    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            for c, d in zip(point, dirs, strict=True):
                p.add_(d[name], alpha=float(c))
        logits = moved(x)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return loss.double().numpy(), (logits.argmax(1) == y).double().numpy()


@pytest.mark.parametrize("k", [1, 3])
def test_sums_of_a_slice_equal_the_plain_per_sample_values(k: int) -> None:
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS).eval()
    dirs, _ = make_directions(model, DirectionSpec(), 2)
    x, y = load_data(DataSpec(train_size=300), "train")
    strata = split_strata(x, y)
    perm = split_permutation(strata, 0, "train")
    options = EngineOptions(device="cpu", points_per_call=k, batch_size=64)
    evaluator = PrefixEvaluator(
        model, dirs, {"train": (x, y)}, {"train": perm}, {"train": strata}, options=options
    )
    centre = evaluator.centre()["train"]
    evaluator.set_centre({"train": centre})
    u_loss, u_correct = _plain_per_sample(model, dirs, np.zeros(2), x[perm], y[perm])
    np.testing.assert_allclose(centre.loss, u_loss, rtol=1e-5)
    np.testing.assert_array_equal(centre.correct, u_correct)
    assert centre.n_strata == 40  # ten digits × four input-norm quartiles

    coords = np.array([[0.3, -0.2], [-0.5, 0.4], [0.1, 0.1], [0.6, 0.6]])
    syncs = evaluator.host_syncs
    got = evaluator.sums(coords, "train", 100, 250)
    assert evaluator.host_syncs - syncs == -(-len(coords) // k)  # one transfer per group
    for row, point in zip(got, coords, strict=True):
        v_loss, v_correct = _plain_per_sample(model, dirs, point, x[perm], y[perm])
        want = point_sums(v_loss[100:250], v_correct[100:250], centre, 100)
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=2e-5)  # float32 per sample


def test_lanes_give_the_same_sums_as_one_and_points_may_start_apart() -> None:
    """Two CPU lanes (threads, each with its own module copy) sum exactly what one does, and a
    call with a start per point equals one call per point."""
    torch.manual_seed(1)
    model = build("mlp-plain", **MODEL_ARGS).eval()
    dirs, _ = make_directions(model, DirectionSpec(), 2)
    x, y = load_data(DataSpec(train_size=300), "train")
    strata = split_strata(x, y)
    perm = split_permutation(strata, 0, "train")
    coords = np.array([[0.3, -0.2], [-0.5, 0.4], [0.1, 0.1], [0.6, 0.6], [0.0, -0.7]])
    starts, stops = np.array([0, 40, 40, 0, 120]), np.array([100, 200, 200, 300, 300])
    got = {}
    for lanes in (1, 2):
        options = EngineOptions(device="cpu", workers=lanes, batch_size=64)
        ev = PrefixEvaluator(
            model, dirs, {"train": (x, y)}, {"train": perm}, {"train": strata}, options=options
        )
        ev.set_centre(ev.centre())
        assert ev.lanes == lanes
        got[lanes] = ev.sums(coords, "train", starts, stops)
        if lanes == 1:
            one_by_one = np.stack(
                [
                    ev.sums(c[None], "train", a, b)[0]
                    for c, a, b in zip(coords, starts, stops, strict=True)
                ]
            )
            np.testing.assert_array_equal(got[1], one_by_one)
    np.testing.assert_array_equal(got[1], got[2])


def test_calls_are_dealt_to_lanes_whole_and_about_evenly() -> None:
    """Each call goes to one lane, once; the lanes' work (samples × points) is balanced."""
    from landscape.explore.prefix_engine import _shares

    calls = [(np.arange(k % 3 + 1), 0, 256 * (1 + k % 5)) for k in range(40)]
    shares = _shares(calls, 2)
    dealt = [id(c) for share in shares for c in share]
    assert sorted(dealt) == sorted(id(c) for c in calls)
    work = [sum((b - a) * len(r) for r, a, b in share) for share in shares]
    assert len(shares) == 2 and max(work) - min(work) <= 256 * 5 * 3
    assert _shares(calls[:1], 2) == [calls[:1]] and _shares([], 2) == []


def test_short_slices_of_a_net_without_convs_go_eight_points_per_call_on_two_lanes() -> None:
    """On CPU with two lanes an MLP's short slices go K = 8 per call (vmap), long slices and a
    conv net's one point per call; every point's sums equal the plain per-sample values."""
    torch.manual_seed(0)
    model = build("mlp-plain", **MODEL_ARGS).eval()
    dirs, _ = make_directions(model, DirectionSpec(), 2)
    x, y = load_data(DataSpec(train_size=700), "train")
    strata = split_strata(x, y)
    perm = split_permutation(strata, 0, "train")
    options = EngineOptions(device="cpu", workers=2, batch_size=64)
    ev = PrefixEvaluator(
        model, dirs, {"train": (x, y)}, {"train": perm}, {"train": strata}, options=options
    )
    centre = ev.centre()["train"]
    ev.set_centre({"train": centre})
    assert ev.short_slice_points == 8 and ev.points_per_call == 1
    coords = np.random.default_rng(1).uniform(-0.6, 0.6, (20, 2))
    syncs = ev.host_syncs
    got = ev.sums(coords, "train", 0, 100)
    assert ev.host_syncs - syncs == 3  # 8 + 8 + 4 points
    for row, point in zip(got, coords, strict=True):
        v_loss, v_correct = _plain_per_sample(model, dirs, point, x[perm], y[perm])
        want = point_sums(v_loss[:100], v_correct[:100], centre, 0)
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=2e-5)
    syncs = ev.host_syncs
    ev.sums(coords[:3], "train", 0, 600)  # longer than a short slice: one call per point
    assert ev.host_syncs - syncs == 3
    conv = build("resnet20", in_channels=1, num_classes=10, image_size=8).eval()
    conv_dirs, _ = make_directions(conv, DirectionSpec(), 2)
    on_conv = PrefixEvaluator(
        conv, conv_dirs, {"train": (x, y)}, {"train": perm}, {"train": strata}, options=options
    )
    assert on_conv.short_slice_points == 1
