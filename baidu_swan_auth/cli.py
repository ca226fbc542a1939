"""The ``baidu-swan-auth`` command: its arguments, its checks, its output and exit statuses.

About 400 lines, a fifth of them the argument parser's help texts, which are the command's own
reference (``--help``); the job is in ``_job``, its token store in ``_job_store``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._client import SwanAuthClient
from ._endpoints import check_endpoint
from ._errors import ConfigurationError
from ._job import JobOptions, JobSummary, run_exchange_job
from ._job_input import count_input_lines
from ._job_output import JobError
from ._job_store import ENV_REDIS_URL, StoreRefused, close_store, redis_store
from ._settings import API_V1, API_V2, ENV_API, ENV_ENDPOINT, ENV_OPENAPI_URL
from ._version import __version__

if TYPE_CHECKING:
    pass

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed: their records say why
EXIT_USAGE = 2  # usage, configuration or file error: nothing was exchanged
# Not 2: exchanges happened and spent their codes, and the records written so far are kept, so
# the fix is to make room (or repair the input) and --resume, not to change the command line.
EXIT_IO_FAILED = 3
_PREFIX = "baidu-swan-auth exchange: "



def _say(text: str) -> None:
    """A line on stderr, come what may: a closed or broken stderr must neither stop a signal
    from stopping the job nor turn a success into a failure."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


class _ProgressBar:
    """A tqdm bar on stderr: done, failed, rate and ETA."""

    def __init__(self, total: int | None) -> None:
        from tqdm import tqdm  # noqa: PLC0415 (the cli extra, needed for terminals only)

        self._bar = tqdm(total=total, unit="code", file=sys.stderr, dynamic_ncols=True)
        self._failed = 0

    def set_total(self, total: int | None) -> None:
        if total is not None:
            self._bar.total = total
            self._bar.refresh()

    def __call__(self, ok: bool) -> None:
        if not ok:
            self._failed += 1
            self._bar.set_postfix(failed=self._failed, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(enabled: bool) -> _ProgressBar | None:
    """A bar when asked for and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        return _ProgressBar(None)
    except ImportError:
        _say("(pip install 'baidu-swan-auth[cli]' for a progress bar)")
        return None


def _count_for(bar: _ProgressBar, path: str) -> None:
    """Give the bar its total once the lines of a regular file are counted, on a daemon thread:
    a count of a huge file must hold up neither the job nor a signal."""
    loop = asyncio.get_running_loop()

    def count() -> None:
        total = count_input_lines(path)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody looks any more
            loop.call_soon_threadsafe(bar.set_total, total)

    threading.Thread(target=count, name="baidu-swan-auth-count", daemon=True).start()


async def _run_job(
    client: SwanAuthClient, options: JobOptions, *, progress: bool
) -> tuple[JobSummary, int | None]:
    """Run the job with SIGINT/SIGTERM handling; returns the summary and the signal, if any."""
    loop = asyncio.get_running_loop()
    stop, cut = asyncio.Event(), asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if not stop.is_set():
            stop.set()  # first: the message below may fail on a closed stderr
            _say(
                "\nstopping: no new inputs; finishing the calls in flight "
                f"(up to {options.grace:.0f}s, again to abandon them)"
            )
        else:
            cut.set()

    def on_waiting() -> None:
        _say(
            f"{_PREFIX}waiting for {options.input} to open (a FIFO opens once a writer opens "
            "it too; Ctrl-C stops)"
        )

    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    bar = _progress_bar(progress)
    if bar is not None:
        _count_for(bar, options.input)
    try:
        summary = await run_exchange_job(
            client, options, stop=stop, cut=cut, on_record=bar, on_waiting=on_waiting
        )
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if bar is not None:
            bar.close()
    return summary, received[0] if received else None


def _refusal(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line before any file is opened, in the CLI's terms."""
    if args.output == "-":
        return (
            "-o - (stdout) is not supported: records hold session keys and go to a file that "
            "is created 0600 and that --resume can read again; give OUTPUT a path"
        )
    endpoint = args.endpoint or os.environ.get(ENV_ENDPOINT)
    if endpoint:
        try:
            check_endpoint(
                endpoint, args.allow_insecure_http, insecure_hint="pass --allow-insecure-http"
            )
        except ConfigurationError as error:
            return str(error)
    openapi_url = args.openapi_url or os.environ.get(ENV_OPENAPI_URL)
    if openapi_url:
        try:
            check_endpoint(
                openapi_url,
                args.allow_insecure_http,
                insecure_hint="pass --allow-insecure-http",
                name="--openapi-url" if args.openapi_url else ENV_OPENAPI_URL,
            )
        except ConfigurationError as error:
            return str(error)
    api = os.environ.get(ENV_API)
    if not args.api and api and api not in (API_V1, API_V2):
        return f"{ENV_API} must be {API_V1} or {API_V2}, not {api!r}"
    return None


class _WarningLine(logging.Handler):
    """The SDK's warnings (a token store that fails, ...) as one line in the CLI's terms."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad log call must not stop the job
            message = str(record.msg)
        _say(f"{_PREFIX}warning: {message}")


@contextlib.contextmanager
def _warnings_as_lines(verbose: bool) -> Iterator[None]:
    """Show the SDK's warnings as ``baidu-swan-auth exchange: warning: ...`` (with -v, the
    logging set up for it shows them already)."""
    if verbose:
        yield
        return
    logger = logging.getLogger("baidu_swan_auth")
    handler = _WarningLine()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


async def _exchange_command(args: argparse.Namespace) -> int:
    refusal = _refusal(args)
    if refusal is not None:
        _say(f"{_PREFIX}{refusal}")
        return EXIT_USAGE
    overrides: dict[str, Any] = {
        "pool_size": max(100, args.concurrency),
        "allow_insecure_http": args.allow_insecure_http,
    }
    if args.endpoint:
        overrides["endpoint"] = args.endpoint
    if args.api:
        overrides["api"] = args.api
    if args.openapi_url:
        overrides["openapi_url"] = args.openapi_url
    redis_url = os.environ.get(ENV_REDIS_URL)
    if not redis_url:
        return await _exchange_with(args, overrides)
    try:
        store = redis_store(redis_url)
    except StoreRefused as refused:
        _say(f"{_PREFIX}{refused}")
        return EXIT_USAGE
    try:
        return await _exchange_with(args, {**overrides, "token_store": store})
    finally:
        # After the client, on every way out: a signal too ends the job through here.
        await close_store(store)


async def _exchange_with(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    try:
        client = SwanAuthClient.from_env(**overrides)
    except ConfigurationError as error:
        _say(f"{_PREFIX}{error}")
        return EXIT_USAGE
    options = JobOptions(
        input=args.input,
        output=args.output,
        concurrency=args.concurrency,
        rate=args.rate,
        resume=args.resume,
    )
    async with client:
        try:
            summary, signum = await _run_job(client, options, progress=not args.no_progress)
        except JobError as error:
            _say(f"{_PREFIX}{error}")
            return EXIT_USAGE
    return _report(summary, signum, options)


def _report(summary: JobSummary, signum: int | None, options: JobOptions) -> int:
    """Say how the job ended, and return its exit status."""
    if summary.output_error is not None:
        _say(
            f"{_PREFIX}cannot write {options.output}: {summary.output_error}; the records in "
            "it are whole: fix that (free space, permissions), then run again with --resume"
        )
    if summary.input_error is not None:
        _say(
            f"{_PREFIX}{summary.input_error}; the records written are whole: once INPUT can "
            "be read, run again with --resume"
        )
    if summary.stopped_by is not None:
        _say(f"{_PREFIX}stopped: {summary.stopped_by}")
    quiet_end = summary.stopped_by is None and summary.input_error is None
    if quiet_end and summary.done == 0 and summary.skipped == 0 and not summary.interrupted:
        _say(f"{_PREFIX}warning: {options.input} holds no codes")
    _say(summary.describe())
    if summary.output_error is not None or summary.input_error is not None:
        return EXIT_IO_FAILED
    if summary.stopped_by is not None:
        return EXIT_USAGE
    if signum is not None:
        return 128 + signum
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number such as 50, not {text!r}")
    return value


def _verbose_flag(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    # A subcommand's own -v defaults to SUPPRESS: with False it would reset a -v given before
    # the subcommand, since argparse applies the subparser's defaults over the parent's.
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if inherited else False,
        help="log every attempt (never a secret, a session key or a whole code)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baidu-swan-auth",
        description="Exchange Baidu smart mini program login codes for openid and session_key.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _verbose_flag(parser, inherited=False)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run exchanges, some failing on purpose, against an embedded fake Baidu",
        description="Starts a fake Baidu on 127.0.0.1, walks through a few exchanges, then runs "
        "a bulk job of a few thousand codes with injected faults, and exits 0 when every outcome "
        "is the one it injected.",
    )
    _verbose_flag(demo, inherited=True)
    exchange = commands.add_parser(
        "exchange",
        help="exchange a file of codes into a file of records",
        description="Exchange every code of INPUT (JSON Lines objects with a 'code' field, or "
        "one code per line) into one JSON Lines record each in OUTPUT. Credentials come from "
        "BAIDU_SWAN_CLIENT_ID and BAIDU_SWAN_SECRET only. With BAIDU_SWAN_REDIS_URL set, the "
        "access token (--api getsessionkey) is shared through that Redis. Exit status: 0 all "
        "ok, 1 some inputs failed, 2 usage, configuration or file error (nothing exchanged), "
        "3 OUTPUT could not be written (records so far are whole: --resume), 130 after Ctrl-C, "
        "143 after SIGTERM.",
    )
    exchange.add_argument(
        "input", metavar="INPUT", help="a file, a pipe or FIFO (read once), or - for stdin"
    )
    exchange.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="records file: a regular file, not a symbolic link; created with mode 0600",
    )
    exchange.add_argument(
        "--concurrency", type=_positive_int, default=16, help="calls in flight (default 16)"
    )
    exchange.add_argument(
        "--rate", type=_positive_float, help="requests per second at most, retries included"
    )
    exchange.add_argument(
        "--endpoint", help="exchange URL (default: $BAIDU_SWAN_ENDPOINT or Baidu's)"
    )
    exchange.add_argument(
        "--api",
        choices=(API_V1, API_V2),
        help=f"the exchange API: {API_V1} (v1, the AppSecret goes with each code) or {API_V2} "
        f"(v2, an access token goes with each code) (default: ${ENV_API}, else {API_V1})",
    )
    exchange.add_argument(
        "--openapi-url",
        metavar="URL",
        help="base URL of the access-token APIs, used by --api getsessionkey (default: "
        f"${ENV_OPENAPI_URL} or Baidu's)",
    )
    exchange.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip inputs OUTPUT already has a record for",
    )
    exchange.add_argument("--no-progress", action="store_true", help="no progress bar")
    exchange.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// endpoint or --openapi-url on a host that is not loopback "
        "(the AppSecret then travels in clear text)",
    )
    _verbose_flag(exchange, inherited=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baidu-swan-auth`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if args.command == "demo":
        bar = _progress_bar(enabled=True)
        try:
            # Imported here: the demo brings the fake Baidu and aiohttp.web, which an
            # `exchange` run has no use for.
            from ._demo import run_demo  # noqa: PLC0415

            return asyncio.run(run_demo(print, on_record=bar))
        finally:
            if bar is not None:
                bar.close()
    if args.command == "exchange":
        with _warnings_as_lines(args.verbose):
            return asyncio.run(_exchange_command(args))
    raise AssertionError(f"unhandled command {args.command}")  # argparse refuses others


if __name__ == "__main__":
    sys.exit(main())
