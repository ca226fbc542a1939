"""Pooling, single-flight, cancellation, closing and event loops, over real HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from baidu_swan_auth import (
    ClientClosedError,
    ConfigurationError,
    ExchangeTimeoutError,
    InvalidCodeError,
    SwanAuthClient,
    TransportError,
    UsageError,
)
from baidu_swan_auth.testing import Delay, ErrorStatus, FakeBaiduServer

from ..helpers import MakeClient


async def test_sequential_exchanges_reuse_one_connection(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    for _ in range(200):
        await client.exchange(fake.issue_code())
    assert len(fake.requests) == 200
    assert fake.connections_opened <= 2


async def test_pool_size_bounds_requests_in_flight(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(pool_size=3)
    codes = [fake.issue_code() for _ in range(12)]
    for code in codes:
        fake.script(code, Delay(0.1))

    await asyncio.gather(*(client.exchange(code) for code in codes))

    assert fake.max_in_flight == 3
    assert fake.connections_opened == 3


async def test_concurrent_calls_with_one_code_share_one_request(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(0.2))

    keys = await asyncio.gather(*(client.exchange(code) for _ in range(10)))

    assert len(fake.requests_for(code)) == 1
    assert len(set(keys)) == 1
    assert keys[0].session_key == fake.grant_for(code).session_key


async def test_shared_failures_reach_every_caller(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)
    fake.script(code, Delay(0.1))

    results = await asyncio.gather(
        *(client.exchange(code) for _ in range(5)), return_exceptions=True
    )

    assert all(isinstance(result, InvalidCodeError) for result in results)
    assert len({id(result) for result in results}) == 5, "each caller gets its own exception"
    assert len(fake.requests_for(code)) == 2


async def test_nothing_is_cached_after_completion(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await asyncio.gather(client.exchange(code), client.exchange(code))

    with pytest.raises(InvalidCodeError):
        await client.exchange(code)
    assert len(fake.requests_for(code)) == 2


async def test_coalescing_can_be_turned_off(fake: FakeBaiduServer, make_client: MakeClient) -> None:
    client = make_client(coalesce=False)
    code = fake.issue_code()
    fake.script(code, Delay(0.1))

    results = await asyncio.gather(
        *(client.exchange(code) for _ in range(4)), return_exceptions=True
    )

    assert len(fake.requests_for(code)) == 4
    assert sum(isinstance(result, InvalidCodeError) for result in results) == 3


async def test_waiters_get_a_transport_error_when_the_first_caller_is_cancelled(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(1.0))
    first = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)

    first.cancel()

    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(TransportError, match="cancelled") as caught:
        await second
    assert "may have been spent" in str(caught.value)


async def test_a_cancelled_waiter_does_not_disturb_the_others(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(0.3))
    first = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)
    quitter = asyncio.create_task(client.exchange(code))
    stayer = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)

    quitter.cancel()

    assert (await first).openid == fake.grant_for(code).openid
    assert (await stayer).openid == fake.grant_for(code).openid
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_a_joining_call_with_bad_settings_fails_alone(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)
    fake.script(code, Delay(0.1))
    first = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.02)

    with pytest.raises(ConfigurationError):
        await client.exchange(code, timeout=-1)
    with pytest.raises(ConfigurationError):
        await client.exchange(code, max_attempts=0)
    # The shared request fails; no waiter is left behind with an unretrieved exception.
    with pytest.raises(InvalidCodeError):
        await first


async def test_waiter_has_its_own_deadline(fake: FakeBaiduServer, client: SwanAuthClient) -> None:
    code = fake.issue_code()
    fake.script(code, Delay(0.5))
    first = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)

    with pytest.raises(ExchangeTimeoutError, match="waiting"):
        await client.exchange(code, timeout=0.1)
    assert (await first).openid


async def test_a_cancelled_call_gives_its_connection_back(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(pool_size=1, timeout=5.0)
    slow = fake.issue_code()
    fake.script(slow, Delay(30))
    task = asyncio.create_task(client.exchange(slow))
    await asyncio.sleep(0.1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # With the only pooled connection back, the next call goes through at once.
    key = await client.exchange(fake.issue_code(), timeout=1.0)
    assert key.openid


async def test_close_fails_calls_in_flight(fake: FakeBaiduServer, make_client: MakeClient) -> None:
    client = make_client(timeout=30.0)
    code = fake.issue_code()
    fake.script(code, Delay(10))
    in_flight = asyncio.create_task(client.exchange(code))
    joined = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.1)

    await asyncio.wait_for(client.aclose(), 2.0)

    with pytest.raises(ClientClosedError) as caught:
        await in_flight
    assert caught.value.attempts == 1
    with pytest.raises(ClientClosedError):
        await joined
    assert not in_flight.cancelled()


async def test_close_interrupts_a_backoff_wait(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(sleep=asyncio.sleep, timeout=60.0)
    code = fake.issue_code()
    fake.script(code, ErrorStatus(503, retry_after="20"))
    task = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.1)

    await asyncio.wait_for(client.aclose(), 2.0)

    with pytest.raises(ClientClosedError):
        await asyncio.wait_for(task, 1.0)


async def test_close_fails_calls_queued_for_a_connection(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(pool_size=1, timeout=30.0)
    busy, queued = fake.issue_code(), fake.issue_code()
    fake.script(busy, Delay(10))
    tasks = [asyncio.create_task(client.exchange(code)) for code in (busy, queued)]
    await asyncio.sleep(0.1)

    await client.aclose()

    for task in tasks:
        with pytest.raises(ClientClosedError):
            await task


async def test_an_outside_cancellation_during_close_stays_a_cancellation(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=30.0)
    code = fake.issue_code()
    fake.script(code, Delay(10))
    task = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.1)

    task.cancel()  # the caller's own cancellation, requested before the client closes
    await client.aclose()

    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def test_a_client_from_another_loop_fails_clearly(
    fake_baidu: FakeBaiduServer, other_loop: asyncio.AbstractEventLoop
) -> None:
    client = SwanAuthClient(fake_baidu.client_id, fake_baidu.secret, endpoint=fake_baidu.url)

    def on_other_loop(coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, other_loop).result(10)  # type: ignore[arg-type]

    key = on_other_loop(client.exchange(fake_baidu.issue_code()))
    assert key

    with pytest.raises(UsageError, match="another event loop"):
        await asyncio.wait_for(client.exchange(fake_baidu.issue_code()), 2.0)

    on_other_loop(client.aclose())
