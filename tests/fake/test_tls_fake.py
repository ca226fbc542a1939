"""TLS against the fake Baidu serving HTTPS, with certificates from ``trustme``.

Verification is on by default; ``ssl=`` trusts a private CA (a proxy, an on-premises gateway);
an unknown, expired, not yet valid or misnamed certificate and a failed handshake are a
``TransportError`` that is not retried, and nothing reaches the server. The fault matrix's
transport faults behave over TLS as they do over plain HTTP.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme
from tenacity import wait_none

from baidu_swan_auth import SwanAuthClient, TransportError
from baidu_swan_auth.testing import (
    ENDPOINT_PATH,
    Delay,
    Drop,
    ErrorStatus,
    FakeBaiduServer,
    HugeBody,
    Redirect,
    Truncated,
)

from ..fault_matrix import FAULT_MATRIX, Row, check_row, describe_steps, run_row
from ..helpers import RecordingSleep


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, identity: str = "127.0.0.1", **cert: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(identity, **cert).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_fake(ca: trustme.CA) -> AsyncIterator[FakeBaiduServer]:
    async with FakeBaiduServer(ssl_context=server_context(ca)) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        yield fake


async def _refused_call(url: str, **options: Any) -> tuple[TransportError, list[float]]:
    """Exchange once against ``url``; return the TransportError it must end in, and the waits."""
    sleep = RecordingSleep()
    async with SwanAuthClient(
        "tls-client-id", "tls-secret", endpoint=url, backoff=wait_none(), sleep=sleep, **options
    ) as client:
        with pytest.raises(TransportError) as caught:
            await client.exchange("tls-login-code-0001")
    return caught.value, sleep.waits


async def test_verification_is_on_by_default(tls_fake: FakeBaiduServer) -> None:
    error, waits = await _refused_call(tls_fake.url)
    assert "TLS failure" in str(error)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert (error.attempts, waits) == (1, []), "certificate errors are never retried"
    assert tls_fake.requests == [], "nothing was sent before the certificate was checked"


async def test_a_private_ca_through_ssl(ca: trustme.CA, tls_fake: FakeBaiduServer) -> None:
    code = tls_fake.issue_code(openid="over-tls")
    async with SwanAuthClient(
        tls_fake.client_id, tls_fake.secret, endpoint=tls_fake.url, ssl=client_context(ca)
    ) as client:
        assert (await client.exchange(code)).openid == "over-tls"
    assert tls_fake.is_spent(code)
    (request,) = tls_fake.requests
    assert request.form["sk"] == tls_fake.secret


NOW = datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize(
    ("identity", "cert", "reason"),
    [
        (
            "127.0.0.1",
            {
                "not_before": NOW - datetime.timedelta(days=30),
                "not_after": NOW - datetime.timedelta(days=1),
            },
            "certificate has expired",
        ),
        (
            "127.0.0.1",
            {
                "not_before": NOW + datetime.timedelta(days=1),
                "not_after": NOW + datetime.timedelta(days=30),
            },
            "certificate is not yet valid",
        ),
        ("not-this-host.example", {}, "IP address mismatch"),
    ],
    ids=["expired", "not-yet-valid", "wrong-name"],
)
async def test_bad_certificates_from_a_trusted_ca_are_final(
    ca: trustme.CA, identity: str, cert: dict[str, Any], reason: str
) -> None:
    async with FakeBaiduServer(ssl_context=server_context(ca, identity, **cert)) as fake:
        error, waits = await _refused_call(fake.url, ssl=client_context(ca))
        assert reason in str(error)
        assert (error.attempts, waits) == (1, [])
        assert fake.requests == []


# -- Handshake failures. asyncio's TLS server resets the connection on a failed handshake
# without sending OpenSSL's alert (the client then sees a reset, like any network failure), so
# these use a blocking OpenSSL server on a thread, which sends its alerts as real servers do.


def _drain(tls: ssl.SSLSocket) -> None:
    """Read what the client still sends until it hangs up. Closing with its request unread
    would answer with a TCP reset, which can destroy the alert still on its way to the client
    and turn a clear TLS failure into a mere 'connection reset'."""
    with contextlib.suppress(OSError), socket.socket(fileno=tls.detach()) as raw:
        raw.settimeout(2.0)
        while raw.recv(65536):
            pass


class _RefusingTLSServer:
    """A TLS server on 127.0.0.1 whose handshakes fail; counts the connections it accepted."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return  # closed
            self.connections += 1
            tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            try:
                tls.do_handshake()
                if tls.recv(1):
                    self.requests += 1
            except OSError:
                _drain(tls)  # the failed handshake, or the alert after it
            finally:
                tls.close()

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()


@pytest.fixture
def refusing_server() -> Iterator[list[_RefusingTLSServer]]:
    servers: list[_RefusingTLSServer] = []
    yield servers
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    ("case", "alert"),
    [
        ("protocol version", "PROTOCOL_VERSION"),
        ("client certificate, TLS 1.2", "HANDSHAKE_FAILURE"),
    ],
)
async def test_handshake_failures_are_final(
    ca: trustme.CA, refusing_server: list[_RefusingTLSServer], case: str, alert: str
) -> None:
    server = server_context(ca)
    client = client_context(ca)
    if case == "protocol version":
        server.maximum_version = ssl.TLSVersion.TLSv1_2
        client.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        server.maximum_version = ssl.TLSVersion.TLSv1_2
        server.verify_mode = ssl.CERT_REQUIRED  # the client has no certificate to show
        ca.configure_trust(server)
    refusing_server.append(tls := _RefusingTLSServer(server))

    error, waits = await _refused_call(f"https://127.0.0.1:{tls.port}{ENDPOINT_PATH}", ssl=client)

    assert "TLS failure" in str(error)
    assert alert in str(error)
    assert (error.attempts, waits) == (1, [])
    assert tls.connections == 1


async def test_a_client_certificate_demanded_after_a_tls13_handshake_is_final(
    ca: trustme.CA, refusing_server: list[_RefusingTLSServer]
) -> None:
    server = server_context(ca)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    refusing_server.append(tls := _RefusingTLSServer(server))

    error, waits = await _refused_call(
        f"https://127.0.0.1:{tls.port}{ENDPOINT_PATH}", ssl=client_context(ca)
    )

    assert "TLS failure" in str(error)
    assert (error.attempts, waits) == (1, [])


async def test_https_to_a_plain_http_server_is_final(fake: FakeBaiduServer) -> None:
    error, waits = await _refused_call(fake.url.replace("http://", "https://", 1))
    assert "TLS failure" in str(error)
    assert (error.attempts, waits) == (1, [])
    assert fake.requests == []


# -- The transport faults of the matrix, over TLS.


def _over_tls(row: Row) -> bool:
    first = row.faults[0] if row.faults else None
    return (
        first is None
        or isinstance(first, Drop | Truncated | HugeBody)
        or row.faults in ((Redirect(307),), (ErrorStatus(503, retry_after="1"),), (Delay(1.0),))
    )


TLS_ROWS = [row for row in FAULT_MATRIX if _over_tls(row)]


@pytest.mark.parametrize("row", TLS_ROWS, ids=describe_steps)
async def test_faults_over_tls(ca: trustme.CA, tls_fake: FakeBaiduServer, row: Row) -> None:
    run = await run_row(row, tls_fake, ssl=client_context(ca))
    check_row(row, run, tls_fake)
