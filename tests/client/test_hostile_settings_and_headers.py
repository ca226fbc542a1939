"""Round two of the attack (issue #13) on the client's settings and Baidu's headers: an absurd
``Retry-After``, a backoff or sleep that misbehaves, budgets that cannot work, a secret with a
newline, and a slow answer against the deadline."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from tenacity import RetryCallState, wait_none

from baidu_swan_auth import (
    ConfigurationError,
    ExchangeTimeoutError,
    ResponseError,
    RetryBudget,
    ServiceUnavailableError,
    SwanAuthClient,
)
from baidu_swan_auth._answers import LONGEST_RETRY_AFTER, parse_retry_after
from baidu_swan_auth._pacing import current_pace
from baidu_swan_auth.bulk import RateLimiter
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer, RawBody

from ..helpers import MakeClient
from ..strategies import http_dates

ABSURD_DATE = "Mon, 01 Jan 99999999999 00:00:00 GMT"


# -- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        ABSURD_DATE,
        "Mon, 01 Jan 10000 00:00:00 GMT",
        "Mon, 01 Jan 2001 00:00:00 +9999",
        "Mon, 01 Jan -5 00:00:00 GMT",
    ],
)
def test_an_absurd_retry_after_date_is_ignored_not_raised(value: str) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["\u0661\u0662", "1e3", "infinity", "1_0", "+5", "0x10"])
def test_delay_seconds_are_ascii_digits_only(value: str) -> None:
    assert parse_retry_after(value) is None


def test_a_huge_delay_is_capped_not_infinite() -> None:
    assert parse_retry_after("9" * 400) == LONGEST_RETRY_AFTER
    assert parse_retry_after("12") == 12.0


@given(value=http_dates)
def test_any_http_date_parses_to_a_finite_wait_or_none(value: str) -> None:
    seconds = parse_retry_after(value, now=lambda: 1_700_000_000.0)
    assert seconds is None or 0 <= seconds <= LONGEST_RETRY_AFTER


async def test_an_absurd_retry_after_ends_the_call_and_its_waiters_with_typed_errors(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(max_attempts=2)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after=ABSURD_DATE), ErrorStatus(503))

    results = await asyncio.gather(
        *(client.exchange(code) for _ in range(3)), return_exceptions=True
    )

    assert all(isinstance(result, ServiceUnavailableError) for result in results), results
    assert len(fake.requests_for(code)) == 2  # the unreadable header means "use the backoff"


# -- settings that cannot work -----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"backoff": "x"},
        {"backoff": 2.0},
        {"sleep": "x"},
        {"on_attempt": 3},
        {"retry_budget": "x"},
        {"retry_budget": 10},
        {"proxy": "not a url with spaces://"},
        {"proxy": "ftp://proxy.example:21"},
        {"proxy": "http://user:p%E4%B8%AD@proxy.example:3128"},
    ],
)
def test_ill_typed_settings_fail_at_construction(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SwanAuthClient("id", "secret", **settings)


@pytest.mark.parametrize("secret", ["line\n", "a\rb", "tab\tsecret", "nul\x00", "del\x7f"])
def test_a_secret_with_control_characters_is_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="control characters") as caught:
        SwanAuthClient("id", secret)
    assert secret not in str(caught.value)


def test_a_proxy_password_stays_out_of_the_refusal() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SwanAuthClient("id", "secret", proxy="socks5://user:hunter2-password@proxy.example:1080")
    assert "hunter2-password" not in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": math.nan},
        {"ttl": math.inf},
        {"ttl": 1e-320},
        {"ttl": 0},
        {"ttl": -1},
        {"min_retries_per_second": math.nan},
        {"min_retries_per_second": math.inf},
        {"min_retries_per_second": -1},
        {"percent_can_retry": math.nan},
        {"percent_can_retry": math.inf},
        {"percent_can_retry": -0.1},
        {"ttl": "10"},
        {"percent_can_retry": True},
        {"clock": 5},
    ],
)
def test_a_retry_budget_refuses_settings_that_cannot_work(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryBudget(**settings)


def test_a_retry_budget_says_what_it_holds() -> None:
    budget = RetryBudget(ttl=10, min_retries_per_second=1, percent_can_retry=0.5, clock=lambda: 0)
    assert repr(budget) == (
        "<RetryBudget ttl=10 min_retries_per_second=1 percent_can_retry=0.5 balance=10.0>"
    )


def _raising_backoff(_state: RetryCallState) -> float:
    raise ZeroDivisionError("a bug in the user's backoff")


@pytest.mark.parametrize(
    "backoff",
    [
        lambda _state: math.nan,
        lambda _state: -1.0,
        lambda _state: math.inf,
        lambda _state: "0.1",
        lambda _state: None,
        _raising_backoff,
    ],
    ids=["nan", "negative", "inf", "str", "none", "raises"],
)
async def test_a_backoff_without_a_usable_wait_means_no_retry(
    fake: FakeBaiduServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    backoff: Any,
) -> None:
    events: list[Any] = []
    client = make_client(backoff=backoff, timeout=3.0, on_attempt=events.append)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)

    assert caught.value.attempts == 1
    assert [event.reason for event in events] == ["backoff"]
    assert "backoff strategy" in caplog.text


async def test_a_sleep_that_returns_no_awaitable_is_a_configuration_error(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    def sleep(_seconds: float) -> None:
        return None

    client = make_client(sleep=sleep)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))

    with pytest.raises(ConfigurationError, match="sleep must return an awaitable"):
        await client.exchange(code)


# -- the deadline against a slow answer --------------------------------------------------------


@pytest.fixture
async def slowloris() -> AsyncIterator[str]:
    """A server that sends its answer's headers, then a byte of body every 0.2 s, forever."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 2000\r\n\r\n")
        try:
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/x"
    server.close()
    await server.wait_closed()


async def test_a_slow_answer_ends_at_the_deadline_not_a_second_after(slowloris: str) -> None:
    loop = asyncio.get_running_loop()
    # aiohttp rounded timeouts over 5 s up to the next whole second of the loop's clock: a
    # deadline 0.15 s past a whole second overshot by about 0.85 s.
    timeout = 5.0 + (1.0 - loop.time() % 1.0) + 0.15
    async with SwanAuthClient(
        "id",
        "secret",
        endpoint=slowloris,
        timeout=timeout,
        read_timeout=timeout,
        backoff=wait_none(),
    ) as client:
        started = loop.time()
        with pytest.raises(ExchangeTimeoutError):
            await client.exchange("slowloris-code-1")
        overshoot = loop.time() - started - timeout
    assert overshoot < 0.1, overshoot


# -- found by attacking the fixes above ----------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": 10**400},
        {"connect_timeout": 10**400},
        {"read_timeout": 10**400},
        {"max_retry_after": 10**400},
        {"endpoint": "https://xn--a.com/oauth"},
        {"proxy": "http://user:password@xn--a.com:8080"},
    ],
)
def test_absurd_numbers_and_hosts_are_configuration_errors(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SwanAuthClient("id", "secret", **settings)
    assert "password" not in str(caught.value)


@pytest.mark.parametrize("name", ["client_id", "secret"])
def test_a_credential_with_a_lone_surrogate_is_refused(name: str) -> None:
    credentials = {"client_id": "id", "secret": "secret", name: "bad\ud800value"}
    with pytest.raises(ConfigurationError, match="not valid Unicode"):
        SwanAuthClient(credentials["client_id"], credentials["secret"])


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": 10**400},
        {"percent_can_retry": 10**400},
        {"ttl": 1e308, "min_retries_per_second": 1e308},
    ],
)
def test_a_retry_budget_refuses_numbers_past_any_float(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryBudget(**settings)


@pytest.mark.parametrize("rate", [10**400, 5e-324])
def test_a_rate_limiter_refuses_rates_whose_interval_is_not_finite(rate: float) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(rate)


async def test_a_retry_budget_clock_that_returns_nan_is_a_configuration_error(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    with pytest.raises(ConfigurationError, match="clock"):
        RetryBudget(clock=lambda: math.nan)
    readings = iter([0.0])  # fine when the budget is built, NaN from the first call on
    client = make_client(retry_budget=RetryBudget(clock=lambda: next(readings, math.nan)))
    with pytest.raises(ConfigurationError, match="clock"):
        await client.exchange(fake.issue_code())


async def test_a_per_call_timeout_past_any_float_is_a_configuration_error(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    with pytest.raises(ConfigurationError):
        await client.exchange(fake.issue_code(), timeout=10**400)


async def test_a_backoff_past_any_float_means_no_retry(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(backoff=lambda _state: 10**400)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))
    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)
    assert caught.value.attempts == 1


@pytest.mark.parametrize("errno", ["\u00b2", "--5", "\u0661", "1" * 40])
async def test_an_errno_that_is_no_number_is_not_an_int_crash(
    fake: FakeBaiduServer, client: SwanAuthClient, errno: str
) -> None:
    code = fake.issue_code()
    fake.script(code, RawBody(json.dumps({"errno": errno, "errmsg": "x"}).encode()))
    with pytest.raises(ResponseError):
        await client.exchange(code)


async def test_a_retry_waiting_for_the_job_rate_keeps_the_call_deadline(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=1.0, max_attempts=3, sleep=asyncio.sleep)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503))
    # The job's limiter, with its next slot 5 s away: the retry would wait that long for it.
    pace = RateLimiter(0.2)
    await pace.acquire()
    current_pace.set(pace)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(ServiceUnavailableError) as caught:
        await client.exchange(code)

    assert loop.time() - started < 1.5, "the call ended at its deadline, not at the slot"
    assert caught.value.attempts == 1
