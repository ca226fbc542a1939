"""The ``baidu-swan-auth`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

import attrs

from ._client import SwanAuthClient
from ._errors import SwanAuthError
from ._models import SessionKey, mask_code
from ._version import __version__
from .testing import Drop, ErrorStatus, FakeBaiduServer, Fault

__all__ = ["main"]


@attrs.frozen
class _Case:
    title: str
    expected: str  # "ok", or the name of the SwanAuthError subclass the case must end in
    faults: tuple[Fault, ...] = ()
    code: str | None = None  # a code that is not issued by the fake
    open_source: bool = False
    spend_first: bool = False


_CASES = (
    _Case("a fresh code", "ok"),
    _Case("a code for Baidu's open-source host (contains @)", "ok", open_source=True),
    _Case(
        "503 with Retry-After, then 429, then success",
        "ok",
        (ErrorStatus(503, retry_after="1"), ErrorStatus(429)),
    ),
    _Case("connection dropped before Baidu read the code", "ok", (Drop(spend=False),)),
    _Case(
        "connection dropped after Baidu spent the code", "CodeConsumedError", (Drop(spend=True),)
    ),
    _Case("a code that was already used", "InvalidCodeError", spend_first=True),
    _Case("a code Baidu never issued", "InvalidCodeError", code="never-issued-code-0000"),
    _Case("502 on every attempt", "ServiceUnavailableError", (ErrorStatus(502),) * 4),
    _Case("an empty code", "InvalidInputError", code=""),
)


async def _run_case(
    case: _Case, fake: FakeBaiduServer, client: SwanAuthClient
) -> tuple[str, SessionKey | SwanAuthError]:
    code = case.code if case.code is not None else fake.issue_code(open_source=case.open_source)
    if case.faults:
        fake.script(code, *case.faults)
    if case.spend_first:
        await client.exchange(code)
    try:
        return code, await client.exchange(code)
    except SwanAuthError as error:
        return code, error


def _mask_secret(value: str) -> str:
    return f"{value[:2]}{'*' * 6}" if len(value) > 8 else "*" * 8


def _describe(result: SessionKey | SwanAuthError) -> tuple[str, str]:
    if isinstance(result, SessionKey):
        return "ok", f"openid={result.openid} session_key={_mask_secret(result.session_key)}"
    attempts = f"after {result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    return type(result).__name__, f"{result} ({attempts})"


async def _demo(out: Callable[[str], None]) -> int:
    async with FakeBaiduServer() as fake:
        out(f"fake Baidu listening at {fake.url}")
        async with SwanAuthClient(fake.client_id, fake.secret, endpoint=fake.url) as client:
            failures = 0
            for number, case in enumerate(_CASES, 1):
                code, result = await _run_case(case, fake, client)
                got, detail = _describe(result)
                verdict = "as expected" if got == case.expected else f"EXPECTED {case.expected}"
                failures += got != case.expected
                out(f"{number}. {case.title}: code {mask_code(code)}")
                out(f"   {got}: {detail} -- {verdict}")
    total = len(_CASES)
    out(f"{total - failures} of {total} outcomes as expected")
    return 0 if failures == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baidu-swan-auth",
        description="Exchange Baidu smart mini program login codes for openid and session_key.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every attempt")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run a few exchanges, some failing on purpose, against an embedded fake Baidu",
        description="Starts a fake Baidu on 127.0.0.1, exchanges codes through SwanAuthClient "
        "(some failing on purpose) and exits 0 when every outcome is the expected one.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baidu-swan-auth`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if args.command == "demo":
        return asyncio.run(_demo(print))
    raise AssertionError(f"unhandled command {args.command}")  # argparse refuses others


if __name__ == "__main__":
    sys.exit(main())
