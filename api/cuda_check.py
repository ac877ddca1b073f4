"""Whether a worker told to compute on CUDA can, checked before it claims a job.

On a host whose NVIDIA driver is missing or older than the CUDA release torch was built for,
``torch.cuda.is_available()`` is false, and a worker that started anyway would fail every job
it claims. ``landscape worker`` calls ``require_cuda`` at start and
``landscape worker --check`` (the compose health check) calls it again, so the worker exits,
or is marked unhealthy, with one line naming torch's CUDA version, the driver found and what
to do.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from landscape.errors import SpecError

# The oldest Linux driver that runs a CUDA major release (minor version compatibility): NVIDIA,
# "CUDA Compatibility", table "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor
# Version Compatibility" (CUDA 13.x >= 580, 12.x >= 525, 11.x >= 450; the exact releases are
# the CUDA Toolkit release notes' x86_64 Linux column).
MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# For a driver too old for the image's CUDA major: the Dockerfile's TORCH_INDEX_URL of a build
# for the major below (pytorch.org's install page lists the CUDA builds a release offers).
OLDER_DRIVER_INDEX: dict[int, tuple[int, str]] = {
    13: (12, "https://download.pytorch.org/whl/cu128")
}
PROC_VERSION = Path("/proc/driver/nvidia/version")
NVIDIA_SMI_TIMEOUT_S = 10.0


def cuda_problem() -> str | None:
    """Why this process cannot compute on CUDA, in one line; None when it can."""
    built_for = torch.version.cuda
    if built_for is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build (torch.version.cuda is None); "
            f"build the image with a CUDA wheel index (TORCH_INDEX_URL) or set "
            f"LANDSCAPE_DEVICE=cpu"
        )
    with warnings.catch_warnings():  # torch warns "driver too old" here; the line says more
        warnings.simplefilter("ignore")
        usable = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if usable:
        return None
    major = int(built_for.split(".")[0])
    needed = MIN_DRIVER.get(major)
    release, runs = driver_release(), driver_cuda_version()
    too_old = (needed is not None and release is not None and _older(release, needed)) or (
        runs is not None and runs[0] < major
    )
    if (release is None and runs is None) or too_old:
        fixes = [f"install an NVIDIA driver >= {needed}" if needed else "update the driver"]
        if major in OLDER_DRIVER_INDEX:
            older, index = OLDER_DRIVER_INDEX[major]
            fixes.append(f"build the image for CUDA {older} (--build-arg TORCH_INDEX_URL="
                         f"{index}, driver >= {MIN_DRIVER[older]})")  # fmt: skip
    else:  # a recent enough driver, but no GPU reaches this process
        fixes = ["give the container the GPUs (compose's device reservation, --gpus all)"]
    fixes.append("set LANDSCAPE_DEVICE=cpu")
    need = f", which needs an NVIDIA driver >= {needed}" if needed else ""
    return (
        f"CUDA is not usable: torch {torch.__version__} is built for CUDA {built_for}{need}; "
        f"{describe_driver(release, runs)}. {_capitalized(', or '.join(fixes))}"
    )


def require_cuda() -> None:
    """Raise a ``SpecError`` (the CLI's one line, exit 2) unless CUDA can compute here."""
    problem = cuda_problem()
    if problem is not None:
        raise SpecError(f"LANDSCAPE_DEVICE=cuda, but {problem}")


def describe_driver(release: str | None, cuda_version: tuple[int, int] | None) -> str:
    """What was found of the driver, for the message."""
    if release is None and cuda_version is None:
        return "no NVIDIA driver found"
    parts = [f"NVIDIA driver {release} found" if release else "an NVIDIA driver found"]
    if cuda_version is not None:
        parts.append(f"(it runs CUDA up to {cuda_version[0]}.{cuda_version[1]})")
    return " ".join(parts)


def driver_release() -> str | None:
    """The loaded kernel driver's release (``580.65.06``): /proc, else nvidia-smi."""
    try:
        text = PROC_VERSION.read_text()
    except OSError:
        text = ""
    found = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if found:
        return found.group(1)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        result = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and lines else None


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the installed user-mode driver (libcuda) runs, from
    ``cuDriverGetVersion``; None without libcuda."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def _older(release: str | None, minimum: str) -> bool:
    """Whether a known driver release is older than ``minimum`` (unknown: not known older)."""
    if release is None:
        return False
    return _numbers(release) < _numbers(minimum)


def _numbers(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", release))


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]
