"""Worker processes: the fan-out over devices (CPU stand-ins for GPUs), lost workers
restarted with their pieces computed again, and workers that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.engine.evaluator import GridEvaluator
from landscape.engine.plan import plan_worker_devices
from landscape.engine.point_evaluator import CoreConfig, split_batches
from landscape.engine.pool import WorkerLost, WorkerPool
from landscape.errors import SpecError
from landscape.losses import resolve_loss
from landscape.specs import EngineOptions
from tests.engine.test_engine import ConvBNNet, _alive, setup

CHUNKS = [np.random.default_rng(i).uniform(-1, 1, size=(k, 2)) for i, k in enumerate((7, 3, 6))]


def test_plan_one_worker_per_visible_gpu_restricted_by_devices() -> None:
    cuda = torch.device("cuda")
    assert plan_worker_devices(cuda, EngineOptions(), n_visible=4) == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3",
    ]  # fmt: skip
    assert plan_worker_devices(cuda, EngineOptions(devices=(3, 1)), n_visible=4) == [
        "cuda:3",
        "cuda:1",
    ]
    assert plan_worker_devices(torch.device("cuda:2"), EngineOptions(), n_visible=4) == ["cuda:2"]
    with pytest.raises(SpecError, match="not visible"):
        plan_worker_devices(cuda, EngineOptions(devices=(4,)), n_visible=4)
    cpu = torch.device("cpu")
    assert plan_worker_devices(cpu, EngineOptions(), n_cores=3) == ["cpu"] * 3
    assert plan_worker_devices(cpu, EngineOptions(workers=2), n_cores=8) == ["cpu"] * 2
    with pytest.raises(SpecError, match="devices"):
        EngineOptions(devices=(0, 0))


def _payload() -> tuple[object, ...]:
    model, dirs, data = setup(ConvBNNet)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = {s: split_batches(x, y, 32, torch.device("cpu"), True) for s, (x, y) in data.items()}
    config = CoreConfig(resolve_loss("cross_entropy"), "cpu", 32, 1, False, True)
    return model, params, dirs, batches, config


def _run(pool: WorkerPool) -> dict[int, dict[str, np.ndarray]]:
    pieces = ((i, c) for i, c in enumerate(CHUNKS))
    return {task: values for task, values, _ in pool.run(pieces)}


def test_fan_out_over_devices_equals_one_process_exactly() -> None:
    """N "devices" (CPU stand-ins) each take pieces; every value is bit-identical to one
    worker's, and every device did work."""
    payload = _payload()
    one = WorkerPool(["cpu"])
    try:
        one.load(payload)
        ref = _run(one)
    finally:
        one.close(kill=False)
    many = WorkerPool(["cpu", "cpu", "cpu"])
    try:
        many.load(payload)
        assert len(set(many.pids())) == 3 and len(many.info) == 3
        got = _run(many)
    finally:
        many.close(kill=False)
    assert sorted(got) == sorted(ref) == [0, 1, 2]
    for task in ref:
        for key in ref[task]:
            np.testing.assert_array_equal(got[task][key], ref[task][key], err_msg=key)


def test_killed_worker_is_restarted_and_the_surface_is_unchanged() -> None:
    model, dirs, data = setup(ConvBNNet, n=600)
    options = EngineOptions(workers=2, compile=False, batch_size=16)
    chunks = [np.random.default_rng(i).uniform(-1, 1, size=(6, 2)) for i in range(12)]
    with GridEvaluator(model, dirs, data, options=options) as ev:
        undisturbed = dict(ev.imap(chunks))
    with GridEvaluator(model, dirs, data, options=options) as ev:
        victim = ev.worker_pids()[0]
        got = {}
        for index, values in ev.imap(chunks):
            if not got:
                os.kill(victim, signal.SIGKILL)  # a real signal, mid-run
            got[index] = values
        info = ev.describe()
        assert victim not in ev.worker_pids()
    assert info["worker_restarts"] == 1
    assert sorted(got) == list(range(len(chunks)))
    for index, ref in undisturbed.items():
        for key in ref:
            np.testing.assert_array_equal(got[index][key], ref[key], err_msg=key)


def test_restarts_are_bounded() -> None:
    pool = WorkerPool(["cpu"], max_restarts=0)
    try:
        pool.load(_payload())
        os.kill(pool.pids()[0], signal.SIGKILL)
        with pytest.raises(WorkerLost, match="died"):
            _run(pool)
    finally:
        pool.close(kill=True)


_PARENT = textwrap.dedent(
    """
    import itertools, sys, time
    import numpy as np
    from tests.engine.test_engine import ConvBNNet, setup
    from landscape.engine.evaluator import GridEvaluator
    from landscape.specs import EngineOptions

    model, dirs, data = setup(ConvBNNet, n=600)
    ev = GridEvaluator(model, dirs, data, options=EngineOptions(workers=2, compile=False))
    print(" ".join(map(str, ev.worker_pids())), flush=True)
    if sys.argv[1] == "busy":
        for _ in ev.imap(np.zeros((8, 2)) for _ in itertools.count()):
            pass
    else:
        ev.evaluate(np.zeros((4, 2)))  # some work done, then idle until killed
        time.sleep(600)
    """
)


@pytest.mark.parametrize("busy", [True, False])
def test_workers_die_with_a_sigkilled_parent(busy: bool) -> None:
    """The parent is SIGKILLed while its workers compute (or sit idle): they are gone in
    seconds, not left holding their memory."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARENT, "busy" if busy else "idle"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        time.sleep(1.0)
        assert proc.poll() is None, "the parent must still run when it is killed"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "engine workers outlived their parent"
    finally:
        proc.kill()
