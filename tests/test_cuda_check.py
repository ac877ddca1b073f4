"""A worker told to use CUDA checks it at start and in its health check: without a usable GPU
it exits with one line naming torch's CUDA version, the driver found and what to do. The
driver and GPU queries are monkeypatched, so every case runs on a CPU machine; the process
tests run the real queries and need a machine without a usable GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from api import cuda_check
from api.settings import Settings
from api.worker import standalone_pool
from landscape.cli import main
from landscape.errors import SpecError
from tests.cli_support import error_line


def _host(
    monkeypatch: pytest.MonkeyPatch,
    *,
    built_for: str | None = "13.0",
    available: bool = False,
    devices: int = 0,
    release: str | None = None,
    runs: tuple[int, int] | None = None,
) -> None:
    """A machine as the check sees it: torch's CUDA build, GPUs visible, the driver found."""
    monkeypatch.setattr(torch.version, "cuda", built_for)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(cuda_check, "driver_release", lambda: release)
    monkeypatch.setattr(cuda_check, "driver_cuda_version", lambda: runs)


def _one_line(message: str | None) -> str:
    assert message is not None
    assert "\n" not in message
    return message


def test_no_driver_names_the_cuda_build_the_minimum_and_the_ways_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _host(monkeypatch)
    message = _one_line(cuda_check.cuda_problem())
    assert f"built for CUDA 13.0, which needs an NVIDIA driver >= {cuda_check.MIN_DRIVER[13]}" in (
        message
    )
    assert "no NVIDIA driver found" in message
    assert f"Install an NVIDIA driver >= {cuda_check.MIN_DRIVER[13]}" in message
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu12" in message
    assert f"driver >= {cuda_check.MIN_DRIVER[12]}" in message
    assert message.endswith("or set LANDSCAPE_DEVICE=cpu")


def test_too_old_a_driver_is_named_with_the_cuda_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, release="550.54.15", runs=(12, 4))
    message = _one_line(cuda_check.cuda_problem())
    assert "NVIDIA driver 550.54.15 found (it runs CUDA up to 12.4)" in message
    assert "Install an NVIDIA driver >= 580.65.06" in message


def test_a_driver_too_old_by_its_cuda_version_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, runs=(12, 8))  # libcuda answers, no /proc or nvidia-smi
    message = _one_line(cuda_check.cuda_problem())
    assert "an NVIDIA driver found (it runs CUDA up to 12.8)" in message
    assert "Install an NVIDIA driver >= 580.65.06" in message


def test_a_recent_driver_without_visible_gpus_asks_for_the_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _host(monkeypatch, release="580.82.07", runs=(13, 0))
    message = _one_line(cuda_check.cuda_problem())
    assert "NVIDIA driver 580.82.07 found" in message
    assert "Give the container the GPUs" in message and "Install" not in message
    assert "TORCH_INDEX_URL" not in message  # a newer build would not help


def test_a_cuda_12_build_on_an_old_driver_offers_no_older_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _host(monkeypatch, built_for="12.8", release="470.256.02", runs=(11, 4))
    message = _one_line(cuda_check.cuda_problem())
    assert "needs an NVIDIA driver >= 525.60.13" in message
    assert "TORCH_INDEX_URL" not in message and message.endswith("LANDSCAPE_DEVICE=cpu")


def test_a_cpu_only_torch_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, built_for=None)
    message = _one_line(cuda_check.cuda_problem())
    assert "CPU-only build" in message and "LANDSCAPE_DEVICE=cpu" in message


def test_usable_cuda_has_no_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, available=True, devices=1, release="580.82.07", runs=(13, 0))
    assert cuda_check.cuda_problem() is None
    cuda_check.require_cuda()


@pytest.mark.parametrize(
    ("text", "release"),
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC "
         "2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "535.104.05"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
         "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 07:09:25 UTC 2025\n", "580.65.06"),
    ],
)  # fmt: skip
def test_driver_release_from_proc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, release: str
) -> None:
    proc = tmp_path / "version"
    proc.write_text(text)
    monkeypatch.setattr(cuda_check, "PROC_VERSION", proc)
    assert cuda_check.driver_release() == release


def test_driver_release_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = --query-gpu=driver_version ] && echo 550.54.15\n')
    smi.chmod(0o755)
    monkeypatch.setattr(cuda_check, "PROC_VERSION", tmp_path / "absent")
    monkeypatch.setattr(cuda_check.shutil, "which", lambda name: str(smi))
    assert cuda_check.driver_release() == "550.54.15"
    monkeypatch.setattr(cuda_check.shutil, "which", lambda name: None)
    assert cuda_check.driver_release() is None


def test_a_cuda_worker_refuses_to_start_and_a_cpu_worker_does_not_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _host(monkeypatch, release="550.54.15", runs=(12, 4))
    with pytest.raises(SpecError, match=r"^LANDSCAPE_DEVICE=cuda, but CUDA is not usable: "):
        standalone_pool(Settings(data_dir=tmp_path / "cuda", device="cuda"))
    assert not (tmp_path / "cuda").exists()  # refused before anything was set up

    def no_check() -> Any:
        raise AssertionError("a CPU worker checked CUDA")

    monkeypatch.setattr(cuda_check, "cuda_problem", no_check)
    pool = standalone_pool(Settings(data_dir=tmp_path / "cpu", device="cpu", workers=1))
    assert len(pool.workers) >= 1


def test_the_health_check_fails_with_the_line_and_passes_on_cpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LANDSCAPE_DATA_DIR", str(tmp_path))
    _host(monkeypatch, release="550.54.15", runs=(12, 4))
    assert main(["worker", "--check", "--device", "cuda"]) == 2
    line = error_line(capsys)
    assert "built for CUDA 13.0" in line and "NVIDIA driver 550.54.15 found" in line
    monkeypatch.setattr(cuda_check, "cuda_problem", lambda: pytest.fail("checked on a CPU"))
    assert main(["worker", "--check", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == "ok: device cpu"


def _worker(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LANDSCAPE_DEVICE": "cuda", "LANDSCAPE_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "landscape.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
@pytest.mark.parametrize(
    "args",
    [("worker",), ("worker", "--check"), ("serve", "--port", "18765")],
    ids=["start", "health-check", "serve-with-workers"],
)
def test_landscape_worker_on_cuda_without_a_gpu_exits_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = _worker(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: LANDSCAPE_DEVICE=cuda, but ")
    if torch.version.cuda is not None:
        assert f"built for CUDA {torch.version.cuda}" in lines[0]
        assert "found" in lines[0] and "LANDSCAPE_DEVICE=cpu" in lines[0]
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_the_deploy_doc_and_dockerfile_give_the_minimum_drivers_and_the_older_build() -> None:
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "deploy.md").read_text()
    dockerfile = (root / "Dockerfile").read_text()
    for major in (12, 13):
        minimum = re.escape(cuda_check.MIN_DRIVER[major])
        assert re.search(rf"CUDA {major}\.x[^|]*\| {minimum} \|", doc), major
    for _older, index in cuda_check.OLDER_DRIVER_INDEX.values():
        assert f"TORCH_INDEX_URL={index}" in doc and f"TORCH_INDEX_URL={index}" in dockerfile
    assert re.search(r"^ARG TORCH_INDEX_URL=", dockerfile, re.M)
