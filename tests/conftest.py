"""Shared fixtures: a fake Baidu on the test's own event loop, and clients pointed at it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tenacity import wait_none

from baidu_swan_auth import RetryBudget, SwanAuthClient
from baidu_swan_auth.testing import FakeBaiduServer

from .helpers import MakeClient, RecordingSleep


@pytest.fixture
async def fake() -> AsyncIterator[FakeBaiduServer]:
    async with FakeBaiduServer() as server:
        yield server


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_client(fake: FakeBaiduServer, sleep: RecordingSleep) -> AsyncIterator[MakeClient]:
    """Build clients against the fake with zero backoff and a recording sleep; close them after."""
    clients: list[SwanAuthClient] = []

    def make(**overrides: Any) -> SwanAuthClient:
        settings: dict[str, Any] = {
            "endpoint": fake.url,
            "backoff": wait_none(),
            "sleep": sleep,
            "retry_budget": RetryBudget(),
        }
        settings.update(overrides)
        client_id = settings.pop("client_id", fake.client_id)
        secret = settings.pop("secret", fake.secret)
        client = SwanAuthClient(client_id, secret, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: MakeClient) -> SwanAuthClient:
    return make_client()


@pytest.fixture(autouse=True)
async def _no_loop_errors() -> AsyncIterator[None]:
    """Fail any test after which the loop reported an error: an unretrieved task exception,
    an unclosed session or connection, and the like."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not reported, [context.get("message") for context in reported]
