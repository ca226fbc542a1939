"""TLS over loopback: verification on by default, a private CA through ``ssl=``."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from baidu_swan_auth import SwanAuthClient, TransportError

from ..helpers import RecordingSleep


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_endpoint(ca: trustme.CA) -> AsyncIterator[tuple[str, list[str]]]:
    """A minimal HTTPS Baidu on 127.0.0.1 whose certificate only ``ca`` vouches for."""
    seen: list[str] = []

    async def exchange(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(str(form.get("code")))
        return web.json_response({"openid": "tls-user", "session_key": "tls-session-key"})

    app = web.Application()
    app.router.add_post("/oauth/jscode2sessionkey", exchange)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}/oauth/jscode2sessionkey", seen
    await runner.cleanup()


async def test_unknown_certificate_is_a_final_transport_error(
    tls_endpoint: tuple[str, list[str]],
) -> None:
    url, seen = tls_endpoint
    sleep = RecordingSleep()
    async with SwanAuthClient("id", "secret", endpoint=url, sleep=sleep) as client:
        with pytest.raises(TransportError, match="TLS") as caught:
            await client.exchange("tls-code-0001")
    assert caught.value.attempts == 1, "certificate errors are never retried"
    assert sleep.waits == []
    assert seen == []


async def test_private_ca_through_ssl_option(
    ca: trustme.CA, tls_endpoint: tuple[str, list[str]]
) -> None:
    url, seen = tls_endpoint
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with SwanAuthClient("id", "secret", endpoint=url, ssl=context) as client:
        key = await client.exchange("tls-code-0002")
    assert key.openid == "tls-user"
    assert seen == ["tls-code-0002"]


async def test_wrong_hostname_is_refused(ca: trustme.CA) -> None:
    # A certificate for another name, trusted CA: still a TLS failure, still not retried.
    other = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("not-this-host.example").configure_cert(server_context)

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response({"openid": "x", "session_key": "y"})

    app = web.Application()
    app.router.add_post("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    context = ssl.create_default_context()
    other.configure_trust(context)
    try:
        async with SwanAuthClient(
            "id", "secret", endpoint=f"https://127.0.0.1:{port}/x", ssl=context
        ) as client:
            with pytest.raises(TransportError) as caught:
                await client.exchange("tls-code-0003")
        assert caught.value.attempts == 1
    finally:
        await runner.cleanup()
