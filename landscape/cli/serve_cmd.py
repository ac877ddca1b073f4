"""``landscape serve``: the REST API, the web page and in-process job workers on one port."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from landscape.cli.wording import choices_text
from landscape.specs import DeviceName

if TYPE_CHECKING:
    from api.settings import Settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the API + web page + job workers",
        description="Serve the REST API (OpenAPI at /docs) and the web page at /, with job "
        "workers in this process. Settings also come from LANDSCAPE_* variables; the options "
        "below override them. SIGTERM/Ctrl-C stop running jobs at a chunk boundary, resumable.",
    )
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="cache folder (./cache)")
    parser.add_argument("--workers", type=int, default=None, help="in-process job workers (1)")
    parser.add_argument(
        "--device", choices=get_args(DeviceName), default=None, help=choices_text(DeviceName)
    )
    parser.add_argument(
        "--demo", action="store_true", help="queue demo surfaces (resnet20/56 ± shortcuts)"
    )
    parser.set_defaults(func=run)
    return parser


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that were given, as Settings fields (env fills the rest)."""
    names = ("host", "port", "data_dir", "workers", "device")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_without_token(settings: Settings) -> str | None:
    """Why serving as configured would let anyone on the network write, or None: a
    non-loopback address needs LANDSCAPE_API_TOKEN, or an explicit LANDSCAPE_ALLOW_OPEN=1."""
    if settings.tokens or settings.allow_open or _is_loopback(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without a token: anyone who reaches it could "
        "queue jobs and upload files. Set LANDSCAPE_API_TOKEN, bind to 127.0.0.1, or set "
        "LANDSCAPE_ALLOW_OPEN=1 (e.g. behind a proxy that authenticates)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import RedactTokens, create_app
    from api.demo import enqueue_demo
    from api.settings import load_settings
    from api.timeouts import HeadTimeoutProtocol

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    settings = load_settings(**overrides(args))
    refusal = open_without_token(settings)
    if refusal is not None:
        print(f"landscape serve: {refusal}", file=sys.stderr)
        return 2
    if settings.device == "cuda" and settings.workers > 0:
        from api.cuda_check import require_cuda

        require_cuda()  # its workers would fail every job: one line now, as `landscape worker`
    app = create_app(settings)
    if args.demo:
        ids = enqueue_demo(app)
        print(f"demo surfaces queued or cached: {', '.join(ids)}")
    print(f"landscape at http://{settings.host}:{settings.port} (API docs at /docs)")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        http=HeadTimeoutProtocol,  # closes connections whose request head dawdles
        # The client's address is the peer's: X-Forwarded-For counts only from the proxies
        # of LANDSCAPE_TRUSTED_PROXIES (api/quota.py), never from any loopback client.
        proxy_headers=False,
        timeout_graceful_shutdown=5,  # SSE streams must not hold up a restart
    )
    return 0
