"""Logging, the attempt hook, and secrets staying out of both (and out of reprs and errors)."""

from __future__ import annotations

import logging
import pickle

import pytest

from baidu_swan_auth import (
    AttemptEvent,
    CodeConsumedError,
    ServiceUnavailableError,
    SwanAuthClient,
    SwanAuthError,
)
from baidu_swan_auth.testing import Drop, ErrorStatus, FakeBaiduServer, RawBody

from ..helpers import MakeClient


async def test_one_debug_line_per_attempt(
    fake: FakeBaiduServer, client: SwanAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="baidu_swan_auth")
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503), ErrorStatus(502))

    await client.exchange(code)

    lines = [r.getMessage() for r in caplog.records if r.name == "baidu_swan_auth"]
    assert len(lines) == 3
    assert "attempt=1" in lines[0]
    assert "status=503" in lines[0]
    assert "retry in" in lines[0]
    assert "attempt=3" in lines[2]
    assert "outcome=ok" in lines[2]
    assert "elapsed=" in lines[2]
    assert all(code not in line for line in lines)
    assert all(code[:4] in line for line in lines), "the masked code correlates the lines"


async def test_attempt_hook_sees_every_attempt(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    events: list[AttemptEvent] = []
    client = make_client(on_attempt=events.append, max_attempts=3)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(429, retry_after="2"))

    await client.exchange(code)

    first, second = events
    assert (first.attempt, first.outcome, first.status) == (1, "unavailable", 429)
    assert (first.will_retry, first.retry_in, first.reason) == (True, 2.0, "retrying")
    assert (second.attempt, second.outcome, second.status) == (2, "ok", 200)
    assert (second.will_retry, second.retry_in, second.reason) == (False, None, "success")
    assert first.elapsed >= 0
    assert code not in repr(events)

    events.clear()
    fake.always(ErrorStatus(503))
    with pytest.raises(ServiceUnavailableError):
        await client.exchange(fake.issue_code())
    assert [event.reason for event in events] == ["retrying", "retrying", "attempts"]
    assert not events[-1].will_retry


async def test_hook_reports_why_a_call_stopped(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    events: list[AttemptEvent] = []
    client = make_client(on_attempt=events.append)
    code = fake.issue_code()
    await client.exchange(code)
    events.clear()

    fake.script(code, Drop(spend=False))
    with pytest.raises(CodeConsumedError):
        await client.exchange(code)

    assert [(e.outcome, e.reason) for e in events] == [
        ("transport", "retrying"),
        ("invalid_code", "final"),
    ]
    assert events[1].error == "invalid_grant"


async def test_a_failing_hook_does_not_break_the_exchange(
    fake: FakeBaiduServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_event: AttemptEvent) -> None:
        raise RuntimeError("metrics backend down")

    client = make_client(on_attempt=broken)
    key = await client.exchange(fake.issue_code())
    assert key.openid
    assert "on_attempt hook raised" in caplog.text


async def test_secrets_stay_out_of_logs_reprs_and_errors(
    fake: FakeBaiduServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    secret, session_keys, codes = fake.secret, [], []
    texts = [repr(client), str(client)]

    for faults in [(), (ErrorStatus(503),), (Drop(spend=True),), (RawBody(b"<html>"),)]:
        code = fake.issue_code()
        codes.append(code)
        fake.script(code, *faults)
        try:
            key = await client.exchange(code)
        except SwanAuthError as error:
            texts += [str(error), repr(error), repr(error.__dict__)]
        else:
            session_keys.append(key.session_key)
            texts += [repr(key), str(key)]
    # An answer that echoes the secret and the code back must not carry them into the error.
    code = fake.issue_code()
    codes.append(code)
    fake.script(code, ErrorStatus(400, error="weird", description=f"got sk={secret} code={code}"))
    with pytest.raises(SwanAuthError) as caught:
        await client.exchange(code)
    texts += [str(caught.value), repr(caught.value), str(caught.value.description)]

    texts.append(caplog.text)
    everything = "\n".join(texts)
    assert session_keys
    for hidden in [secret, *session_keys, *codes]:
        assert hidden not in everything
    assert all(hidden not in str(request) for request in fake.requests for hidden in [secret])


def test_errors_survive_pickling() -> None:
    error = ServiceUnavailableError(
        "Baidu is unavailable", error="slow_down", status=429, attempts=3, retry_after=2.0
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ServiceUnavailableError
    assert (copy.error, copy.status, copy.attempts, copy.retry_after) == ("slow_down", 429, 3, 2.0)
    assert str(copy) == str(error)
