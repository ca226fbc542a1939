"""Defences found in review: compressed bodies, traceback locals, closing under cancellation,
answers that are not HTTP, and hooks that are coroutines."""

from __future__ import annotations

import asyncio
import gzip
import logging
import traceback
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from baidu_swan_auth import (
    ApiError,
    AttemptEvent,
    ResponseError,
    ServiceUnavailableError,
    SwanAuthClient,
    SwanAuthError,
    TransportError,
)
from baidu_swan_auth.testing import Delay, Drop, ErrorStatus, FakeBaiduServer, RawBody

from ..helpers import MakeClient, traceback_frames

BOMB = gzip.compress(b" " * (16 * 2**20))  # 16 MiB of spaces in about 16 KiB


@pytest.fixture
async def gzip_endpoint() -> AsyncIterator[str]:
    """An endpoint answering with a small gzip body that expands to 16 MiB."""

    async def bomb(_request: web.Request) -> web.Response:
        return web.Response(
            body=BOMB, headers={"Content-Encoding": "gzip"}, content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/x", bomb)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/x"
    await runner.cleanup()


async def test_the_body_cap_holds_for_compressed_answers(gzip_endpoint: str) -> None:
    assert len(BOMB) < 64 * 1024
    # A borrowed session asks for gzip (aiohttp's default): the cap must count expanded bytes.
    async with aiohttp.ClientSession() as session:
        client = SwanAuthClient("id", "secret", endpoint=gzip_endpoint, session=session)
        with pytest.raises(ResponseError, match="larger than"):
            await client.exchange("gzip-code-0001")
        await client.aclose()


async def test_the_body_cap_holds_for_compressed_answers_to_the_own_session(
    gzip_endpoint: str,
) -> None:
    async with SwanAuthClient("id", "secret", endpoint=gzip_endpoint) as client:
        with pytest.raises(ResponseError, match="larger than"):
            await client.exchange("gzip-code-0002")


def _frames(error: BaseException) -> Iterator[tuple[str, str, dict[str, object]]]:
    """The frames an error tracker would record, the test's own aside."""
    return (frame for frame in traceback_frames(error) if frame[0] != __file__)


async def test_failed_calls_keep_secrets_out_of_traceback_locals(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=5.0)
    bystander = fake.issue_code()
    fake.script(bystander, Delay(0.5))
    in_flight = asyncio.create_task(client.exchange(bystander))
    await asyncio.sleep(0.05)

    failures: list[SwanAuthError] = []
    leaky = fake.issue_code()
    body = b'{"openid": "o", "session_key": "SESSION-KEY-IN-A-BAD-ANSWER", "errno": 7}'
    fake.script(leaky, RawBody(body))
    cases = [
        (leaky, ()),
        (fake.issue_code(), (ErrorStatus(503),) * 4),
        (fake.issue_code(), (Drop(),) * 4),
    ]
    for code, faults in cases:
        fake.script(code, *faults)
        try:
            await client.exchange(code)
        except SwanAuthError as error:
            failures.append(error)
    await in_flight

    assert [type(error) for error in failures] == [
        ApiError,
        ServiceUnavailableError,
        TransportError,
    ]
    frames = 0
    for error in failures:
        assert "AttemptFailure" not in "".join(traceback.format_exception(error))
        for filename, name, local_vars in _frames(error):
            frames += 1
            ours = "baidu_swan_auth" in filename
            for local, value in local_vars.items():
                shown = repr(value)
                assert fake.secret not in shown, (name, local)
                if ours:
                    assert "SESSION-KEY-IN-A-BAD-ANSWER" not in shown, (name, local)
                    assert bystander not in shown, (name, local)
    assert frames > 5, "the walk saw the SDK's frames"
    transport = failures[-1]
    assert isinstance(transport.__cause__, aiohttp.ClientError), "aiohttp's error is kept"
    walked = [filename for filename, _, _ in _frames(transport)]
    assert not any("/aiohttp/" in name or "/asyncio/" in name for name in walked), (
        "the frames that held the request are dropped"
    )


async def test_aclose_cancelled_midway_still_closes_the_session(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client(timeout=30.0)
    code = fake.issue_code()
    fake.script(code, Delay(10))
    call = asyncio.create_task(client.exchange(code))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(client.aclose())
    await asyncio.sleep(0)  # aclose() is now waiting for the call to unwind

    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await client.aclose()  # returns once the session really is closed

    assert client._holder.session is not None
    assert client._holder.session.closed
    with pytest.raises(SwanAuthError):
        await call


async def test_concurrent_acloses_all_wait_for_the_session(
    fake: FakeBaiduServer, make_client: MakeClient
) -> None:
    client = make_client()
    await client.exchange(fake.issue_code())
    await asyncio.gather(client.aclose(), client.aclose(), client.aclose())
    assert client._holder.session is not None
    assert client._holder.session.closed


@pytest.fixture
async def not_http() -> AsyncIterator[str]:
    """A server that answers every request with bytes that are not HTTP."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SURPRISE this is not http\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/x"
    server.close()
    await server.wait_closed()


async def test_an_answer_that_is_not_http_is_a_response_error(
    not_http: str, make_client: MakeClient
) -> None:
    client = make_client(endpoint=not_http)
    with pytest.raises(ResponseError, match="not valid HTTP") as caught:
        await client.exchange("not-http-code-1")
    assert caught.value.attempts == 1


async def test_a_coroutine_hook_is_reported_not_leaked(
    fake: FakeBaiduServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    class Hook:  # an async __call__ is not a coroutine function: only the result tells
        async def __call__(self, _event: AttemptEvent) -> None:
            return None

    client = make_client(on_attempt=Hook())
    caplog.set_level(logging.WARNING, logger="baidu_swan_auth")
    await client.exchange(fake.issue_code())
    await client.exchange(fake.issue_code())
    warnings = [r for r in caplog.records if "coroutine" in r.getMessage()]
    assert len(warnings) == 1
