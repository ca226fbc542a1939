"""Leak check: the whole fault matrix, successes included, with DEBUG logging on every logger.

The AppSecret and every session key the fake handed out must be absent from the captured log,
from the repr and str of every result, exception and attempt event, and from the repr of every
local variable of every frame of every failed call's traceback chain (causes and contexts
included), which is what error trackers such as Sentry record; aiohttp's and asyncio's frames
must not be in that chain at all. For the SDK's own objects among those locals (the client, most
often), the reprs of their attributes are checked too: that is where the secret and the
pre-encoded body live, in a holder whose repr is redacted. The secret may sit in aiohttp's
buffers; it must never be in a repr.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import aiohttp
import pytest
from tenacity import wait_none

from baidu_swan_auth import AttemptEvent, SessionKey, SwanAuthClient, SwanAuthError
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer

from ..fault_matrix import FAULT_MATRIX, run_row
from ..helpers import RecordingSleep, traceback_frames


async def _echoing_secret_call(fake: FakeBaiduServer) -> SwanAuthError:
    """A call whose answer echoes the secret back in its error description."""
    code = fake.issue_code()
    fake.script(code, _echo_fault(fake))
    async with SwanAuthClient(
        fake.client_id, fake.secret, endpoint=fake.url, backoff=wait_none(), sleep=RecordingSleep()
    ) as client:
        try:
            await client.exchange(code)
        except SwanAuthError as error:
            return error
    raise AssertionError("the call succeeded")


def _reprs(value: object) -> Iterator[str]:
    """The repr of ``value`` and, for the SDK's own objects, of each of their attributes (the
    fake Baidu, which knows the secret by design, aside)."""
    yield repr(value)
    module = type(value).__module__
    if module.startswith("baidu_swan_auth") and module != "baidu_swan_auth.testing":
        names = getattr(value, "__dict__", None) or {}
        slots = [name for cls in type(value).__mro__ for name in getattr(cls, "__slots__", ())]
        for attribute in [*names, *slots]:
            if hasattr(value, attribute):
                yield repr(getattr(value, attribute))


def _echo_fault(fake: FakeBaiduServer) -> ErrorStatus:
    return ErrorStatus(400, error="invalid_client", description=f"sk={fake.secret} is wrong")


async def test_no_secret_or_session_key_leaks_anywhere(
    fake: FakeBaiduServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger and its handler
    for name in ("aiohttp", "asyncio", "baidu_swan_auth"):
        caplog.set_level(logging.DEBUG, logger=name)

    events: list[AttemptEvent] = []
    outcomes: list[SessionKey | SwanAuthError] = []
    codes: list[str] = []
    for row in FAULT_MATRIX:
        run = await run_row(row, fake, on_attempt=events.append)
        outcomes.append(run.outcome)
        codes.append(run.code)
    outcomes.append(await _echoing_secret_call(fake))

    secret = fake.secret
    session_keys = {fake.grant_for(code).session_key for code in codes}
    hidden = [secret, *session_keys]
    assert any(isinstance(outcome, SessionKey) for outcome in outcomes)
    handed_out = {outcome.session_key for outcome in outcomes if isinstance(outcome, SessionKey)}
    assert handed_out <= session_keys

    # The log, with every logger at DEBUG.
    log = caplog.text
    assert "exchange code=" in log, "the SDK's DEBUG lines were captured"
    for value in hidden:
        assert value not in log
    for code in codes:
        assert code not in log, "codes are masked in the log"

    # Every repr and str the caller could print.
    texts = [repr(event) for event in events]
    for outcome in outcomes:
        texts += [repr(outcome), str(outcome)]
        if isinstance(outcome, SwanAuthError):
            texts += [repr(vars(outcome)), "".join(map(str, outcome.args))]
    shown = "\n".join(texts)
    for value in hidden:
        assert value not in shown

    # Every local of every frame an error tracker would record.
    failures = [outcome for outcome in outcomes if isinstance(outcome, SwanAuthError)]
    frames = 0
    files: set[str] = set()
    for error in failures:
        for filename, function, local_vars in traceback_frames(error):
            frames += 1
            files.add(filename)
            for local, value in local_vars.items():
                for text in _reprs(value):
                    for secret_value in hidden:
                        assert secret_value not in text, (filename, function, local)
    assert len(failures) > 40
    assert frames > 100
    # aiohttp's exception is kept as the cause, but none of its frames nor asyncio's: they hold
    # the request body (asyncio's write() has it as a local), secret and all.
    assert any(isinstance(error.__cause__, aiohttp.ClientError) for error in failures)
    assert not any("/aiohttp/" in name or "/asyncio/" in name for name in files), files
    assert any(name.endswith("_client.py") for name in files)
