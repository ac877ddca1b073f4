"""Subnormal floats are flushed in every thread the product computes on (x86 cores compute
on them many times slower, and a net without its identity path is full of them)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from landscape import cli
from landscape.engine.devices import SUBNORMAL, flush_denormals, flushing_denormals

CAN_FLUSH = flush_denormals()
torch.set_flush_denormal(False)  # this process computes as it did; the tests set it
needs_flush = pytest.mark.skipif(not CAN_FLUSH, reason="this CPU cannot flush subnormals")

# multiplied on two intra-op threads: a thread that does not flush keeps its share nonzero
COUNT_SURVIVORS = f"""
import sys, torch
from landscape.engine.devices import flush_denormals
if sys.argv[1] == "flush":
    flush_denormals()
torch.set_num_threads(2)
print(int((torch.full((1 << 22,), {SUBNORMAL}) * 1.0).count_nonzero()))
"""


def _survivors(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", COUNT_SURVIVORS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(done.stdout)


@needs_flush
def test_threads_started_after_the_flag_flush_too() -> None:
    assert _survivors("keep") == 1 << 22  # the check itself can fail
    assert _survivors("flush") == 0


@needs_flush
def test_the_cli_flushes_while_a_command_runs_and_restores_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda args: seen.append(flushing_denormals()), verbose=False)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert not flushing_denormals()
    assert cli.main([]) == 0
    assert seen == [True]
    assert not flushing_denormals()  # the caller's state is its own again
