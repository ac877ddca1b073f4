"""ONNX Runtime's reference run of an uploaded graph, in a child process with a memory and a
time limit.

Why a child: ONNX Runtime executes the uploaded graph, and the static bounds of
``onnx_bounds`` rest on shape inference, which a hostile graph might defeat. In the server's own
process an allocation of gigabytes or an hour of arithmetic would hit every request; in a child
(``onnx_runtime_child.py``, which caps its address space with ``RLIMIT_AS`` before importing
ONNX Runtime, and is killed at the time limit) it is a refused upload. At most
``MAX_CONCURRENT_CHECKS`` children run at once per process, so parallel uploads cannot add their
limits up.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from landscape.errors import ModelFormatError, UnsafeModelError

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("onnx_runtime_child.py")
MAX_CONCURRENT_CHECKS = 2
_CHECKS = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)
# One thread per library, and few malloc arenas: each thread and arena reserves address space.
_CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}


def run_onnxruntime(
    model_path: Path,
    x: np.ndarray,
    input_name: str,
    *,
    memory_bytes: int,
    timeout_s: float,
    max_output_elements: int,
) -> np.ndarray:
    """The graph's first output on ``x``, computed by ONNX Runtime in a child process with at
    most ``memory_bytes`` of address space and ``timeout_s`` seconds; a limit passed is an
    ``UnsafeModelError``, any other failure a ``ModelFormatError``."""
    with _CHECKS, tempfile.TemporaryDirectory(prefix="onnx-check-") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(x_path, np.ascontiguousarray(x), allow_pickle=False)
        args = [str(model_path), str(x_path), str(out_path), input_name, str(memory_bytes)]
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(CHILD), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={**os.environ, **_CHILD_ENV},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise UnsafeModelError(
                f"ONNX Runtime did not finish the check within {timeout_s:g} s, the time limit "
                "of an upload's check"
            ) from exc
        result = _last_json_line(done.stdout)
        if done.returncode == 0 and result.get("ok"):
            return _read_output(out_path, max_output_elements)
        limit = f"{memory_bytes / 2**20:.0f} MiB of address space"
        if result.get("error") == "memory":
            raise UnsafeModelError(
                f"ONNX Runtime ran out of the check's memory limit ({limit}): "
                f"{result.get('message', '')}"
            )
        if done.returncode < 0 or not result:
            log.warning(
                "ONNX Runtime's check ended with %s: %s", done.returncode, done.stderr[-2000:]
            )
            raise UnsafeModelError(
                f"ONNX Runtime stopped during the check (exit status {done.returncode}), most "
                f"likely at the check's memory limit ({limit})"
            )
        raise ModelFormatError(f"ONNX Runtime cannot run the graph: {result.get('message', '')}")


def _last_json_line(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _read_output(path: Path, max_elements: int) -> np.ndarray:
    """The child's answer, refused unread when it holds more than the graph was allowed."""
    if path.stat().st_size > 16 * max_elements + 4096:  # complex128 is the widest; + header
        raise UnsafeModelError(
            f"ONNX Runtime's output is larger than the {max_elements} elements a tensor may hold"
        )
    return np.asarray(np.load(path, allow_pickle=False))
