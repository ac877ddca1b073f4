"""``landscape worker``: job workers alone (no API), e.g. the GPU service in docker-compose."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any


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
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from api.settings import Settings
    from api.worker import standalone_pool

    logging.getLogger().setLevel(logging.INFO)
    given = {"data_dir": args.data_dir, "workers": args.workers, "device": args.device}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    pool = standalone_pool(settings)

    def stop(signum: int, _frame: Any) -> None:
        print(f"signal {signum}: stopping at the next chunk boundary")
        pool.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pool.start()
    print(f"{len(pool.workers)} worker(s) on {settings.db_url}")
    while not pool.stop_event.wait(1.0):
        pass
    pool.stop()
    return 0
