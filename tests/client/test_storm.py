"""Load: a storm of mixed faults against one client, and a sustained outage against the budget.

The fake runs on its own thread, so every task left on the test's loop afterwards is the client's.
Both tests are marked (``storm``, ``outage``) and run in the default ``pytest`` run; select them
with ``pytest -m "storm or outage"``.

The storm does not compare each call's outcome with the fault matrix: under 300 calls at once on
two cores, the fake sometimes takes longer than the 0.25 s read timeout to answer, and a spurious
timeout legitimately changes an outcome (a retry that succeeds, or finds the code spent). What it
checks holds whatever the timing.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from tenacity import wait_none

from baidu_swan_auth import (
    RetryBudget,
    ServiceUnavailableError,
    SessionKey,
    SwanAuthClient,
    SwanAuthError,
)
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer, Fault

from ..fault_matrix import FAULT_MATRIX, MATRIX_CLIENT, Row, resolve
from ..helpers import RecordingSleep

STORM_CALLS = 4000
STORM_CONCURRENCY = 300
STORM_SEED = 7_2024
#: Of the calls, this share shares its code with another call under way (single-flight).
DUPLICATE_SHARE = 0.05

OUTAGE_CALLS = 1000
OUTAGE_CONCURRENCY = 100

#: The matrix rows one client can play: same settings, and a fake (not a closed port) behind it.
STORM_ROWS = [
    row
    for row in FAULT_MATRIX
    if not row.settings and all(isinstance(step, Fault) for step in row.faults)
]


@pytest.fixture
def threaded_fake() -> Iterator[FakeBaiduServer]:
    fake = FakeBaiduServer()
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


async def _bounded(calls: list[Callable[[], Awaitable[object]]], limit: int) -> list[object]:
    """Run every call, at most ``limit`` at a time; each result is a value or an exception."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[object]]) -> object:
        async with gate:
            try:
                return await call()
            except Exception as error:
                return error

    return await asyncio.gather(*(one(call) for call in calls))


def _acquired_connections(client: SwanAuthClient) -> int:
    # aiohttp has no public count of the connections a connector has handed out; its
    # private set is the only view of a connection that was never given back.
    session = client._holder.session
    assert session is not None
    connector = session.connector
    assert connector is not None
    return len(connector._acquired)  # type: ignore[attr-defined]


@pytest.mark.storm
async def test_a_storm_of_mixed_faults_leaves_nothing_behind(
    threaded_fake: FakeBaiduServer,
) -> None:
    fake = threaded_fake
    rng = random.Random(STORM_SEED)
    client = SwanAuthClient(
        fake.client_id,
        fake.secret,
        endpoint=fake.url,
        backoff=wait_none(),
        sleep=RecordingSleep(),
        # Room for every retry the faults call for: more retries, more connections torn down.
        # The default budget is the outage test's.
        retry_budget=RetryBudget(min_retries_per_second=1000.0),
        **MATRIX_CLIENT,  # type: ignore[arg-type]
    )
    tasks_before = asyncio.all_tasks()

    async def play(row: Row, code: str) -> SessionKey:
        if row.spent_before:
            await client.exchange(code)
        fake.script(code, *(resolve(step) for step in row.faults if isinstance(step, Fault)))
        return await client.exchange(code)

    calls: list[Callable[[], Awaitable[object]]] = []
    codes: list[str] = []
    rows: collections.Counter[str] = collections.Counter()
    while len(calls) < STORM_CALLS:
        row = rng.choice(STORM_ROWS)
        code = fake.issue_code()
        rows[row.note or repr(row.faults)] += 1
        calls.append(lambda row=row, code=code: play(row, code))
        codes.append(code)
        if rng.random() < DUPLICATE_SHARE:
            calls.append(lambda code=code: client.exchange(code))
            codes.append(code)
    order = list(range(len(calls)))
    rng.shuffle(order)

    started = time.monotonic()
    results = await _bounded([calls[i] for i in order], STORM_CONCURRENCY)
    elapsed = time.monotonic() - started

    kinds: collections.Counter[str] = collections.Counter()
    for index, result in zip(order, results, strict=True):
        if isinstance(result, SessionKey):
            # A result is never another call's: the grant of this very code.
            grant = fake.grant_for(codes[index])
            assert result == SessionKey(grant.openid, grant.session_key)
            kinds["ok"] += 1
        else:
            assert isinstance(result, SwanAuthError), repr(result)
            assert 0 <= result.attempts <= MATRIX_CLIENT["max_attempts"]
            kinds[result.kind] += 1
    assert len(results) >= STORM_CALLS
    assert kinds["ok"] > STORM_CALLS // 10, kinds
    assert {"unavailable", "transport", "response", "code_consumed", "api_error"} <= set(kinds)

    # Nothing left behind: no task, no connection handed out, no request being handled.
    await fake.wait_idle(timeout=10.0)
    assert fake.in_flight == 0
    assert _acquired_connections(client) == 0
    leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    assert not leftover, leftover

    # And the client still works.
    code = fake.issue_code(openid="after-the-storm")
    assert (await client.exchange(code)).openid == "after-the-storm"
    await client.aclose()
    print(f"storm: {len(results)} calls in {elapsed:.1f}s, {len(fake.requests)} requests, {kinds}")


@pytest.mark.outage
async def test_a_sustained_outage_stays_within_the_retry_budget(
    threaded_fake: FakeBaiduServer,
) -> None:
    fake = threaded_fake
    fake.always(ErrorStatus(503))
    # The real default budget, on the real monotonic clock, and the real default backoff.
    client = SwanAuthClient(fake.client_id, fake.secret, endpoint=fake.url)
    codes = [fake.issue_code() for _ in range(OUTAGE_CALLS)]
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda code=code: client.exchange(code) for code in codes
    ]

    started = time.monotonic()
    results = await _bounded(calls, OUTAGE_CONCURRENCY)
    elapsed = time.monotonic() - started
    await client.aclose()

    assert all(isinstance(result, ServiceUnavailableError) for result in results)
    sent = len(fake.requests)
    assert sent == sum(result.attempts for result in results)  # type: ignore[attr-defined]
    budget = OUTAGE_CALLS + 0.2 * OUTAGE_CALLS + 10 * max(elapsed, 10.0)
    assert sent <= budget, (sent, budget, elapsed)
    # The budget is used, not merely refused: the reserve and the 20% were spent.
    assert sent >= OUTAGE_CALLS + 0.2 * OUTAGE_CALLS + 100 - 10
    print(f"outage: {OUTAGE_CALLS} calls, {sent} requests in {elapsed:.2f}s (bound {budget:.0f})")
