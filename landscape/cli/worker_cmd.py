"""``landscape worker``: job workers alone (no API), e.g. the GPU service in docker-compose."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any, get_args

from landscape.cli.wording import choices_text
from landscape.specs import DeviceName

# How long a stopping worker waits for its job to reach a chunk boundary. A cold
# torch.compile takes up to ~30 s per split of a surface (docs/performance.md), so a surface
# of two splits stopped while compiling gets through its compile and one chunk; the compose
# file's stop_grace_period is longer still, so Docker's SIGKILL never cuts this wait short.
STOP_WAIT_SECONDS = 120.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="run job workers against the jobs database",
        description="Claim queued jobs from the database (LANDSCAPE_DATABASE_URL) and compute "
        "them into the data folder. Several workers, on one host or many, never take the same "
        "job. SIGTERM stops the current job at a chunk boundary and requeues it.",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="cache folder (./cache)")
    parser.add_argument("--workers", type=int, default=None, help="worker threads (1)")
    parser.add_argument(
        "--device", choices=get_args(DeviceName), default=None, help=choices_text(DeviceName)
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that the device can compute (CUDA: driver and GPU) and exit; "
        "the compose health check",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from api.settings import load_settings
    from api.worker import standalone_pool

    logging.getLogger().setLevel(logging.INFO)
    given = {"data_dir": args.data_dir, "workers": args.workers, "device": args.device}
    settings = load_settings(**{k: v for k, v in given.items() if v is not None})
    if args.check:
        return check(settings.device)
    pool = standalone_pool(settings)  # a worker told to use CUDA exits here without it

    def stop(signum: int, _frame: Any) -> None:
        print(f"signal {signum}: stopping at the next chunk boundary")
        pool.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pool.start()
    print(f"{len(pool.workers)} worker(s) on {settings.db_url}")
    while not pool.stop_event.wait(1.0):
        pass
    pool.stop(timeout=STOP_WAIT_SECONDS)
    return 0


def check(device: str) -> int:
    """The health check: CUDA asked for must be usable (else one line, exit 2); other
    devices have nothing to check."""
    if device == "cuda":
        from api.cuda_check import require_cuda

        require_cuda()
    print(f"ok: device {device}")
    return 0
