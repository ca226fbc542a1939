"""``python -m baidu_swan_auth.testing``: serve a fake Baidu endpoint in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from ._server import FakeBaiduServer
from ._values import DEFAULT_CLIENT_ID, DEFAULT_SECRET

__all__ = ["main"]


async def _serve(client_id: str, secret: str, host: str, port: int, auto_issue: bool) -> None:
    fake = FakeBaiduServer(
        client_id=client_id,
        secret=secret,
        host=host,
        port=port,
        auto_issue=auto_issue,
        record_requests=False,
    )
    async with fake:
        print(fake.url, flush=True)
        print(
            f"fake Baidu endpoint; client_id={client_id!r}, auto_issue={auto_issue}; "
            "Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows; there Ctrl-C still raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake Baidu endpoint in the foreground until Ctrl-C or SIGTERM.

    The first line on stdout is the endpoint URL. The secret is read from the
    ``BAIDU_SWAN_SECRET`` environment variable (never from the command line, which other users
    can see), else [`DEFAULT_SECRET`][baidu_swan_auth.testing.DEFAULT_SECRET].

    Args:
        argv: Command-line arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m baidu_swan_auth.testing",
        description="Serve a fake Baidu jscode2sessionkey endpoint on the loopback interface.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--client-id",
        default=os.environ.get("BAIDU_SWAN_CLIENT_ID") or DEFAULT_CLIENT_ID,
        help="AppKey to accept (default: $BAIDU_SWAN_CLIENT_ID or %(default)s)",
    )
    parser.add_argument(
        "--auto-issue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accept any code never seen before, once (default: on)",
    )
    args = parser.parse_args(argv)
    secret = os.environ.get("BAIDU_SWAN_SECRET") or DEFAULT_SECRET
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.client_id, secret, args.host, args.port, args.auto_issue))
    return 0
