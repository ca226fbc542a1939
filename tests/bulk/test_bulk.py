"""exchange_many over real HTTP: one outcome per input, bounds, rate, laziness, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from baidu_swan_auth import (
    ApiError,
    CodeConsumedError,
    ConfigurationError,
    InvalidCodeError,
    InvalidInputError,
    ResponseError,
    RetryBudget,
    ServiceUnavailableError,
    SessionKey,
    SwanAuthClient,
    TransportError,
)
from baidu_swan_auth.bulk import Outcome, RateLimiter, error_label
from baidu_swan_auth.testing import Delay, Drop, ErrorStatus, FakeBaiduServer

from ..helpers import MakeClient


async def _all(outcomes: AsyncIterator[Outcome]) -> list[Outcome]:
    return [outcome async for outcome in outcomes]


async def test_one_outcome_per_input_with_mixed_faults(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    # A fault rate this high would exhaust the default retry budget, by design.
    client = make_client(retry_budget=RetryBudget(min_retries_per_second=1000))
    expected: dict[int, str] = {}
    items: list[tuple[int, object]] = []
    for row in range(300):
        code = fake.issue_code()
        kind = ["ok", "retried", "consumed", "used", "outage", "empty", "none", "unknown"][row % 8]
        if kind == "retried":
            fake.script(code, ErrorStatus(503), ErrorStatus(429))
        elif kind == "consumed":
            fake.script(code, Drop(spend=True))
        elif kind == "used":
            await client.exchange(code)
        elif kind == "outage":
            fake.script(code, *[ErrorStatus(502)] * 4)
        items.append((row, {"empty": "", "none": None, "unknown": f"never-{row}"}.get(kind, code)))
        expected[row] = kind

    outcomes = await _all(client.exchange_many(items, concurrency=20))

    assert sorted(outcome.tag for outcome in outcomes) == list(range(300))
    for outcome in outcomes:
        kind = expected[outcome.tag]
        assert outcome.ok == (kind in ("ok", "retried")), (kind, outcome)
        if outcome.ok:
            assert isinstance(outcome.result, SessionKey)
            assert outcome.error is None
            continue
        assert outcome.result is None
        expected_type = {
            "consumed": CodeConsumedError,
            "used": InvalidCodeError,
            "unknown": InvalidCodeError,
            "outage": ServiceUnavailableError,
            "empty": InvalidInputError,
            "none": InvalidInputError,
        }[kind]
        assert type(outcome.error) is expected_type, (kind, outcome)


async def test_plain_codes_and_async_iterables(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    codes = [fake.issue_code() for _ in range(10)]

    async def source() -> AsyncIterator[str]:
        for code in codes:
            await asyncio.sleep(0)
            yield code

    outcomes = await _all(client.exchange_many(source()))
    assert sorted(outcome.code for outcome in outcomes) == sorted(codes)
    assert all(outcome.ok and outcome.tag is None for outcome in outcomes)


async def test_the_concurrency_bound_holds_at_the_fake(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(pool_size=100)
    codes = [fake.issue_code() for _ in range(40)]
    for code in codes:
        fake.script(code, Delay(0.05))

    outcomes = await _all(client.exchange_many(codes, concurrency=5))

    assert len(outcomes) == 40
    assert fake.max_in_flight == 5


async def test_the_rate_holds_retries_included(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds  # the injected clock moves only by the waits it asked for

    limiter = RateLimiter(20, clock=lambda: now[0], sleep=sleep)
    codes = [fake.issue_code() for _ in range(30)]
    for code in codes[:10]:
        fake.script(code, ErrorStatus(503))  # ten retries, paced like everything else

    outcomes = await _all(client.exchange_many(codes, concurrency=8, rate=limiter))

    assert all(outcome.ok for outcome in outcomes)
    requests = len(fake.requests)
    assert requests == 40
    # 40 requests at 20 per second on a clock that stood still otherwise: each one waited for
    # its own slot, 50 ms after the previous one, and the first did not wait at all.
    assert now[0] - 100.0 == pytest.approx((requests - 1) / 20)
    assert len(waits) == requests - 1


async def test_the_rate_holds_over_real_time(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    rate, count = 40.0, 60
    codes = [fake.issue_code() for _ in range(count)]
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcomes = await _all(client.exchange_many(codes, concurrency=16, rate=rate))

    elapsed = loop.time() - started
    assert len(outcomes) == count
    assert elapsed >= (count - 1) / rate * 0.9
    arrivals = sorted(request.received_at for request in fake.requests)
    # No initial burst: the second request waits for its slot.
    assert arrivals[1] - arrivals[0] >= 0.9 / rate
    for first, later in zip(arrivals, arrivals[10:], strict=False):
        assert later - first >= 10 / rate * 0.9


def test_rate_limiter_spacing() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 9))

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)

    async def take(times: int) -> None:
        for _ in range(times):
            await limiter.acquire()

    asyncio.run(take(3))
    assert slept == [0.25, 0.5]  # slots at 0, 0.25, 0.5 for three callers arriving at once
    now[0] = 10.0
    slept.clear()
    asyncio.run(take(1))
    assert slept == [], "an idle limiter owes nobody a wait"


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf"), "5"])
def test_bad_rates_are_refused(rate: object) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("concurrency", [0, -3, 2.5, True])
async def test_bad_concurrency_is_refused_at_the_call(
    client: SwanAuthClient, concurrency: object
) -> None:
    with pytest.raises(ConfigurationError):
        client.exchange_many(["x"], concurrency=concurrency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "items",
    ["one-code-of-22-letters", b"one-code", bytearray(b"one-code"), memoryview(b"one-code")],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
async def test_a_bare_code_is_refused_at_the_call(
    fake: FakeBaiduServer, client: SwanAuthClient, items: object
) -> None:
    # Iterable, but each of its characters (or byte values) would be exchanged as a code.
    with pytest.raises(ConfigurationError, match=r"list of codes.*\[code\]") as caught:
        await _all(client.exchange_many(items))  # type: ignore[arg-type]
    assert type(items).__name__ in str(caught.value)
    assert "one-code" not in str(caught.value), "a whole code stays out of the message"
    await asyncio.sleep(0.05)
    assert fake.requests == []


async def test_inputs_are_read_lazily(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    pulled = 0

    def codes() -> Iterator[str]:
        nonlocal pulled
        for _ in range(100_000):
            pulled += 1
            yield fake.issue_code()

    first: list[Outcome] = []
    async with contextlib.aclosing(client.exchange_many(codes(), concurrency=8)) as outcomes:
        async for outcome in outcomes:
            first.append(outcome)
            if len(first) == 3:
                break

    assert len(first) == 3
    assert pulled <= 8 + 3, f"{pulled} inputs read to yield 3 outcomes"


async def test_leaving_early_cancels_the_calls_in_flight(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=60.0, read_timeout=60.0)
    quick = fake.issue_code()
    slow = [fake.issue_code() for _ in range(6)]
    for code in slow:
        fake.script(code, Delay(30))

    def calls() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() if "_exchange_one" in repr(t.get_coro())}

    # Not a timing: a guard. Left running, the slow calls would hold the exit for 30 s.
    async with asyncio.timeout(5):
        outcomes = client.exchange_many([*slow, quick], concurrency=7)
        async with contextlib.aclosing(outcomes):
            async for outcome in outcomes:
                assert outcome.code == quick
                break

    assert calls() == set(), "no call is left running"
    # Their pooled connections came back: a new call goes through at once.
    assert (await client.exchange(fake.issue_code(), timeout=2.0)).openid


async def test_a_failing_input_source_stops_the_job(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    def codes() -> Iterator[str]:
        yield fake.issue_code()
        raise OSError("the input file went away")

    with pytest.raises(OSError, match="went away"):
        await _all(client.exchange_many(codes()))


def test_error_labels() -> None:
    assert error_label(InvalidCodeError("x", error="invalid_grant")) == "invalid_grant"
    assert error_label(CodeConsumedError("x", error="invalid_grant")) == "code_consumed"
    assert error_label(ApiError("x", error="40001", errno=40001)) == "40001"
    assert error_label(ServiceUnavailableError("x", error="invalid_grant")) == "unavailable"
    assert error_label(TransportError("x")) == "transport"
    assert error_label(ResponseError("x")) == "response"
    assert error_label(InvalidInputError("x")) == "invalid_input"


def test_outcome_repr_hides_codes_and_keys() -> None:
    outcome = Outcome("a-whole-login-code-123456", 7, result=SessionKey("o", "secret-session-key"))
    shown = repr(outcome)
    assert "a-whole-login-code-123456" not in shown
    assert "secret-session-key" not in shown
    assert "tag=7" in shown
    assert outcome.ok


async def test_waiting_for_the_rate_limit_is_not_part_of_the_timeout(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    # At 10 per second the tenth call waits 0.9 s for its slot, three times its own deadline.
    client = make_client(timeout=0.3)
    codes = [fake.issue_code() for _ in range(10)]
    outcomes = await _all(client.exchange_many(codes, concurrency=10, rate=10))
    assert [outcome.error for outcome in outcomes] == [None] * 10


async def test_a_cancelled_wait_for_a_rate_slot_gives_the_slot_back() -> None:
    now = [0.0]
    limiter = RateLimiter(4, clock=lambda: now[0], sleep=asyncio.sleep)
    await limiter.acquire()  # slot 0.00
    later = asyncio.create_task(limiter.acquire())  # slot 0.25
    latest = asyncio.create_task(limiter.acquire())  # slot 0.50
    await asyncio.sleep(0)
    later.cancel()
    with pytest.raises(asyncio.CancelledError):
        await later
    # The freed 0.25 slot goes to the next caller, who would otherwise wait for 0.75.
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(round(seconds, 9))

    limiter._sleep = record
    await limiter.acquire()
    assert slept == [0.25]
    latest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await latest
    await limiter.acquire()  # the latest slot, given back, is taken again
    assert slept == [0.25, 0.5]


async def test_a_stalled_input_does_not_hold_back_a_finished_call(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    release = asyncio.Event()

    async def slow_producer() -> AsyncIterator[str]:
        yield fake.issue_code()
        await release.wait()  # a producer with nothing more to say for now
        yield fake.issue_code()

    outcomes = client.exchange_many(slow_producer())
    first = await asyncio.wait_for(anext(outcomes), 5)  # handed back while the input stalls
    assert first.ok
    release.set()
    rest = [outcome async for outcome in outcomes]
    assert [outcome.ok for outcome in rest] == [True]


async def test_outcomes_that_finished_before_the_input_failed_are_handed_back(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    codes = [fake.issue_code() for _ in range(3)]
    for code in codes:
        fake.script(code, Delay(0.2))

    async def failing() -> AsyncIterator[str]:
        for code in codes:
            yield code
        await asyncio.sleep(0.05)
        raise OSError("the input file went away")

    seen: list[Outcome] = []

    async def collect() -> None:
        async for outcome in client.exchange_many(failing()):
            seen.append(outcome)

    with pytest.raises(OSError, match="went away"):
        await collect()
    assert len(seen) == 3, "the calls under way finished and were handed back first"
    assert all(outcome.ok for outcome in seen)


async def test_cancelling_one_call_gives_that_input_an_outcome_and_the_rest_go_on(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    slow, quick = fake.issue_code(), fake.issue_code()
    fake.script(slow, Delay(5))
    outcomes = client.exchange_many([slow, quick], concurrency=2)
    first = await anext(outcomes)
    assert first.code == quick
    assert first.ok
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.startswith("_exchange_one"):  # type: ignore[union-attr]
            task.cancel()  # someone cancels the call for the slow code
    second = await anext(outcomes)
    assert second.code == slow
    assert isinstance(second.error, TransportError)
    assert second.error.code_may_be_spent
    with pytest.raises(StopAsyncIteration):
        await anext(outcomes)


async def test_an_input_that_fails_with_a_cancellation_is_an_error_not_the_end(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    first, never = fake.issue_code(), fake.issue_code()

    async def rows() -> AsyncIterator[str]:
        yield first
        fetch = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        fetch.cancel()  # somebody cancels what the input waits for
        yield await fetch  # type: ignore[misc]
        yield never

    seen: list[Outcome] = []

    async def collect() -> None:
        async for outcome in client.exchange_many(rows(), concurrency=1):
            seen.append(outcome)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(collect())
    assert [outcome.code for outcome in seen] == [first]
    assert fake.requests_for(never) == []
