"""Retry semantics: what is retried, how long the client waits, and the retry budget."""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import pytest
from tenacity import RetryCallState, Retrying, wait_exception, wait_fixed

from baidu_swan_auth import (
    CodeConsumedError,
    ExchangeTimeoutError,
    InvalidCodeError,
    RetryBudget,
    ServiceUnavailableError,
    SwanAuthClient,
    TransportError,
)
from baidu_swan_auth._answers import parse_retry_after
from baidu_swan_auth._retry import Disposition, default_backoff, disposition_of_status
from baidu_swan_auth._transport import transport_failure
from baidu_swan_auth.testing import (
    Delay,
    Drop,
    ErrorStatus,
    FakeBaiduServer,
    HugeBody,
    Truncated,
)

from ..helpers import MakeClient, RecordingSleep, socket_port


@pytest.mark.parametrize("status", [429, 503, 500, 502, 504])
async def test_overload_and_server_errors_are_retried(
    fake: FakeBaiduServer, client: SwanAuthClient, status: int
) -> None:
    code = fake.issue_code(openid="after-retry")
    fake.script(code, ErrorStatus(status), ErrorStatus(status))

    key = await client.exchange(code)

    assert key.openid == "after-retry"
    assert len(fake.requests_for(code)) == 3


async def test_max_attempts_counts_the_first_attempt(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(max_attempts=3)
    fake.always(ErrorStatus(503))

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(fake.issue_code())
    assert caught.value.attempts == 3
    assert caught.value.status == 503
    assert len(fake.requests) == 3

    with pytest.raises(ServiceUnavailableError):
        await client.exchange(fake.issue_code(), max_attempts=1)
    assert len(fake.requests) == 4


async def test_status_wins_over_the_body(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    # A gateway's 503 with an OAuth error body is still an outage, not a bad code.
    code = fake.issue_code()
    fake.script(code, *[ErrorStatus(503, error="invalid_grant", description="busy")] * 4)

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)

    assert caught.value.error == "invalid_grant"
    assert caught.value.description == "busy"
    assert len(fake.requests) == 4


@pytest.mark.parametrize("status", [200, 400])
async def test_slow_down_is_retried_whatever_its_status(
    fake: FakeBaiduServer, client: SwanAuthClient, status: int
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(status, error="slow_down"))
    await client.exchange(code)
    assert len(fake.requests) == 2

    code = fake.issue_code()
    fake.script(code, *[ErrorStatus(status, error="slow_down")] * 4)
    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)
    assert caught.value.error == "slow_down"


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "invalid_request", "other"])
async def test_error_bodies_are_final(
    fake: FakeBaiduServer, client: SwanAuthClient, error: str
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(400, error=error))
    with pytest.raises(Exception):  # noqa: B017, PT011 (the type is checked in test_exchange)
        await client.exchange(code)
    assert len(fake.requests) == 1


async def test_retry_after_seconds_is_honoured(
    fake: FakeBaiduServer, client: SwanAuthClient, sleep: RecordingSleep
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after="3"), ErrorStatus(429, retry_after="1"))

    await client.exchange(code)

    assert sleep.waits == [3.0, 1.0]


async def test_retry_after_http_date_is_honoured(
    fake: FakeBaiduServer, client: SwanAuthClient, sleep: RecordingSleep
) -> None:
    code = fake.issue_code()
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    fake.script(code, ErrorStatus(503, retry_after=when))

    await client.exchange(code)

    (wait,) = sleep.waits
    assert 3.0 <= wait <= 5.0


async def test_retry_after_past_the_cap_gives_up(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep
) -> None:
    client = make_client(max_retry_after=30.0, timeout=600.0)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after="120"))

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)

    assert caught.value.retry_after == 120.0
    assert caught.value.attempts == 1
    assert sleep.waits == []


async def test_retry_after_past_the_deadline_gives_up(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep
) -> None:
    client = make_client(timeout=5.0)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(429, retry_after="8"))

    with pytest.raises(ServiceUnavailableError):
        await client.exchange(code)
    assert sleep.waits == []
    assert len(fake.requests) == 1


async def test_backoff_waits_grow_exponentially(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep
) -> None:
    client = make_client(backoff=default_backoff(), max_attempts=4)
    fake.always(ErrorStatus(502))

    with pytest.raises(ServiceUnavailableError):
        await client.exchange(fake.issue_code())

    assert len(sleep.waits) == 3
    for wait, base in zip(sleep.waits, (0.1, 0.2, 0.4), strict=True):
        assert base <= wait <= base + 0.1


async def test_backoff_is_pluggable(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep
) -> None:
    client = make_client(backoff=wait_fixed(0.25), max_attempts=3)
    fake.always(ErrorStatus(503))
    with pytest.raises(ServiceUnavailableError):
        await client.exchange(fake.issue_code())
    assert sleep.waits == [0.25, 0.25]


def test_default_backoff_values() -> None:
    backoff = default_backoff()
    state = RetryCallState(Retrying(), None, (), {})
    waits = []
    for attempt in range(1, 10):
        state.attempt_number = attempt
        waits.append(backoff(state))
    assert 0.1 <= waits[0] <= 0.2
    assert all(wait <= 2.1 for wait in waits)
    assert waits[-1] >= 2.0


async def test_connection_refused_is_retried(
    make_client: MakeClient, sleep: RecordingSleep
) -> None:
    with socket_port() as port:
        client = make_client(endpoint=f"http://127.0.0.1:{port}/x", max_attempts=4)
        with pytest.raises(TransportError):
            await client.exchange("refused-code-123")
    assert len(sleep.waits) == 3


async def test_drop_before_spending_is_retried_to_success(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code(openid="dropped-then-ok")
    fake.script(code, Drop(spend=False))
    assert (await client.exchange(code)).openid == "dropped-then-ok"
    assert len(fake.requests_for(code)) == 2


@pytest.mark.parametrize("fault", [Drop(spend=True), Truncated(spend=True)])
async def test_ambiguous_failure_then_invalid_grant_is_code_consumed(
    fake: FakeBaiduServer, client: SwanAuthClient, fault: Drop | Truncated
) -> None:
    code = fake.issue_code()
    fake.script(code, fault)

    with pytest.raises(CodeConsumedError) as caught:
        await client.exchange(code)

    error = caught.value
    assert isinstance(error, InvalidCodeError)
    assert error.error == "invalid_grant"
    assert error.attempts == 2
    assert "spent" in str(error)


async def test_read_timeout_is_ambiguous(fake: FakeBaiduServer, make_client: MakeClient) -> None:
    # The fake keeps processing after the client gave up, as Baidu would: the code is spent.
    client = make_client(
        read_timeout=0.1, timeout=5.0, backoff=wait_fixed(0.4), sleep=asyncio.sleep
    )
    code = fake.issue_code()
    fake.script(code, Delay(0.2))

    with pytest.raises(CodeConsumedError):
        await client.exchange(code)
    assert len(fake.requests_for(code)) == 2


async def test_last_attempt_timing_out_is_an_exchange_timeout(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(read_timeout=0.1, timeout=5.0, max_attempts=2)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503), Delay(0.5))
    with pytest.raises(ExchangeTimeoutError) as caught:
        await client.exchange(code)
    assert caught.value.attempts == 2


async def test_500_then_invalid_grant_is_code_consumed(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)  # spent
    fake.script(code, ErrorStatus(500))
    with pytest.raises(CodeConsumedError):
        await client.exchange(code)


async def test_safe_failure_then_invalid_grant_is_not_code_consumed(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)
    fake.script(code, ErrorStatus(503))
    with pytest.raises(InvalidCodeError) as caught:
        await client.exchange(code)
    assert type(caught.value) is InvalidCodeError


async def test_pool_wait_is_not_a_connect_timeout(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    # One pooled connection, busy for longer than connect_timeout: the second call queues for it
    # and must neither fail nor retry.
    client = make_client(pool_size=1, connect_timeout=0.05, timeout=5.0)
    slow, queued = fake.issue_code(), fake.issue_code()
    fake.script(slow, Delay(0.4))

    results = await asyncio.gather(client.exchange(slow), client.exchange(queued))

    assert [key.openid for key in results] == [
        fake.grant_for(slow).openid,
        fake.grant_for(queued).openid,
    ]
    assert len(fake.requests) == 2


async def test_budget_caps_retries_under_a_sustained_outage(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    now = [1000.0]
    budget = RetryBudget(clock=lambda: now[0])
    client = make_client(retry_budget=budget, max_attempts=4)
    fake.always(ErrorStatus(503))
    calls = 600

    for _ in range(calls):
        with pytest.raises(ServiceUnavailableError):
            await client.exchange(fake.issue_code())

    retries = len(fake.requests) - calls
    assert retries <= 0.2 * calls + 10 * 10
    assert retries >= 0.2 * calls + 10 * 10 - 1  # the budget is used, not just refused
    assert len(fake.requests) < calls * 4

    # Deposits and the reserve expire: after ttl seconds, retries are possible again.
    now[0] += 11
    fake.always(None)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))
    await client.exchange(code)


def test_budget_arithmetic() -> None:
    now = [0.0]
    budget = RetryBudget(
        ttl=10, min_retries_per_second=1, percent_can_retry=0.5, clock=lambda: now[0]
    )
    assert budget.balance == 10
    for _ in range(10):
        assert budget.try_withdraw()
    assert not budget.try_withdraw()
    budget.deposit()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    now[0] = 5.0
    assert not budget.try_withdraw()
    now[0] = 10.5  # events expire between ttl and ttl + ttl/10 after they happened
    assert budget.balance == pytest.approx(0.0)
    now[0] = 11.0
    assert budget.balance == pytest.approx(10.0)
    now[0] = 1000.0
    assert budget.balance == 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-1", None),
        ("nan", None),
        ("soon", None),
        ("", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now=lambda: now) == 7
    assert parse_retry_after(email.utils.formatdate(now - 7, usegmt=True), now=lambda: now) == 0


async def test_a_retry_that_could_not_finish_in_time_is_not_started(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    # The first attempt took 0.6 s of a 1 s deadline: another one like it would not fit.
    client = make_client(timeout=1.0)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, delay=0.6))

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)

    assert caught.value.attempts == 1
    assert len(fake.requests) == 1


async def test_an_oversized_overload_page_is_still_retried(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code(openid="big-503-then-ok")
    fake.script(
        code, HugeBody(64 * 1024, status=503), HugeBody(64 * 1024, chunked=True, status=502)
    )
    assert (await client.exchange(code)).openid == "big-503-then-ok"
    assert len(fake.requests_for(code)) == 3


async def test_backoff_strategies_see_the_failure(
    fake: FakeBaiduServer, make_client: MakeClient, sleep: RecordingSleep
) -> None:
    def by_error(error: BaseException) -> float:
        return 0.7 if isinstance(error, ServiceUnavailableError) else 0.1

    client = make_client(backoff=wait_exception(by_error))
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503), Drop())
    await client.exchange(code)
    assert sleep.waits == [0.7, 0.1]


def test_failure_classes() -> None:
    error, disposition = transport_failure(aiohttp.ConnectionTimeoutError())
    assert isinstance(error, ExchangeTimeoutError)
    assert disposition is Disposition.SAFE
    error, disposition = transport_failure(aiohttp.SocketTimeoutError())
    assert isinstance(error, ExchangeTimeoutError)
    assert disposition is Disposition.AMBIGUOUS
    error, disposition = transport_failure(aiohttp.ServerDisconnectedError())
    assert type(error) is TransportError
    assert disposition is Disposition.AMBIGUOUS
    error, disposition = transport_failure(TimeoutError())
    assert isinstance(error, ExchangeTimeoutError)
    assert disposition is Disposition.FINAL
    assert disposition_of_status(503) is Disposition.SAFE
    assert disposition_of_status(429) is Disposition.SAFE
    assert disposition_of_status(500) is Disposition.AMBIGUOUS
