"""What an error tracker records of a failed call holds no secret, in any form that went on the
wire (issue #13's acceptance).

Hypothesis draws an AppSecret, a login code and a proxy password full of the characters that
change under percent-encoding (``/ + = & % @``, spaces, non-ASCII), and a hostile peer: a server
that echoes the request into its answer (JSON at 200, 400, 5xx, in ``error_description``,
``msg`` or the ``error`` token itself, or as bytes that are not HTTP), a server that resets the
connection, and a proxy that wants credentials and quotes them back. For every error the call
raises, the whole chain (``__cause__`` and ``__context__``) is walked as an error tracker walks it:

* the secret and the proxy password appear in no message, no description, no repr of an
  exception, and no repr of any local of any frame (nor of the attributes of the SDK's own
  objects among those locals);
* the code appears in no message, description or repr of an exception. It may be a local of the
  SDK's frames, as it is of the caller's: docs/security.md says so.

Each form is checked: as is, ``quote_plus`` (a form body), ``quote`` (a URL) and, for the proxy,
the ``Proxy-Authorization: Basic`` token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tenacity import wait_none

from baidu_swan_auth import SwanAuthClient, SwanAuthError

from ..helpers import traceback_frames

#: Characters that percent-encoding changes, and some that it keeps.
NASTY = st.text(alphabet="aZ09/+=&%@ ?#:;~.-_é中", min_size=6, max_size=16)
#: aiohttp sends a proxy's credentials as Latin-1 (the client refuses others at construction).
NASTY_LATIN_1 = st.text(alphabet="aZ09/+=&%@ ?#:;~.-_é", min_size=6, max_size=16)

ECHOES = [
    "json_description",  # {"error": "invalid_client", "error_description": <the request>}
    "json_errno",  # {"errno": 7, "msg": <the request>}
    "error_token_secret",  # {"error": <the secret>}
    "error_token_code",  # {"error": <the code>}
    "plain_text",  # the request as a text/plain body
    "not_http_status_line",  # "HTTP/1.1 <the request>" : aiohttp cannot parse it
    "not_http_header",  # a header line made of the request
    "not_http_long_line",  # a header line past aiohttp's limit, which quotes its first bytes
]
RESETS = ["reset_on_accept", "reset_after_request"]
PROXIES = ["proxy_407", "proxy_407_connect", "proxy_echo", "proxy_reset"]


def _wire_forms(value: str) -> set[str]:
    """How ``value`` can show up after a trip through a form body or a URL."""
    return {value, quote_plus(value), quote(value, safe=""), quote(value)}


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class HostilePeer:
    """One loopback server that plays the endpoint, or a proxy, as ``behaviour`` says."""

    def __init__(self, behaviour: str, status: int) -> None:
        self.behaviour = behaviour
        self.status = status
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> HostilePeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.behaviour == "reset_on_accept":
                _reset(writer)
                return
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if self.behaviour in ("reset_after_request", "proxy_reset"):
                _reset(writer)
                return
            writer.write(self._answer(head, body))
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    def _answer(self, head: bytes, body: bytes) -> bytes:
        request = head + body
        text = request.decode("utf-8", "replace")
        fields = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        secret, code = fields.get("sk", ""), fields.get("code", "")
        # The request as sent, and its values decoded and encoded again as a URL would have them.
        echo = f"{text} | {secret} {code} | {quote(secret, safe='')} {quote(code)}"
        behaviour = self.behaviour
        if behaviour == "json_description":
            return _http(self.status, {"error": "invalid_client", "error_description": echo})
        if behaviour == "json_errno":
            return _http(self.status, {"errno": 7, "msg": echo, "errmsg": echo})
        if behaviour == "error_token_secret":
            return _http(self.status, {"error": secret, "error_description": echo})
        if behaviour == "error_token_code":
            return _http(self.status, {"error": code, "error_description": echo})
        if behaviour == "plain_text":
            return _http(self.status, echo, content_type="text/plain")
        if behaviour == "not_http_status_line":
            return b"HTTP/1.1 " + request.replace(b"\r\n", b" ") + b"\r\n\r\n"
        if behaviour == "not_http_header":
            return b"HTTP/1.1 200 OK\r\n" + request.replace(b"\r\n", b" ") + b"\r\n\r\n"
        if behaviour == "not_http_long_line":
            # aiohttp quotes the first 100 bytes of a line that is too long: the secret straddles
            # that cut, so only a part of it would be shown.
            line = b"X" * (100 - len(b"sk=") - 4) + b"sk=" + body.partition(b"sk=")[2]
            return b"HTTP/1.1 200 OK\r\n" + line + b"Y" * 9000 + b"\r\n\r\n"
        if behaviour in ("proxy_407", "proxy_407_connect"):
            return _http(
                407, echo, content_type="text/plain", extra=b"Proxy-Authenticate: Basic\r\n"
            )
        if behaviour == "proxy_echo":
            return _http(400, {"error": "invalid_request", "error_description": echo})
        raise AssertionError(behaviour)


def _http(
    status: int, payload: Any, *, content_type: str = "application/json", extra: bytes = b""
) -> bytes:
    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    return (
        (
            f"HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + data
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        yield current
        pending += [current.__cause__, current.__context__]


def _reprs(value: object) -> Iterator[str]:
    """The repr of a local and, for the SDK's own objects, of each of their attributes."""
    yield repr(value)
    if type(value).__module__.startswith("baidu_swan_auth"):
        names = list(getattr(value, "__dict__", None) or {})
        names += [name for cls in type(value).__mro__ for name in getattr(cls, "__slots__", ())]
        for name in names:
            if hasattr(value, name):
                yield repr(getattr(value, name))


async def _fail(
    behaviour: str, status: int, secret: str, code: str, password: str
) -> SwanAuthError:
    async with HostilePeer(behaviour, status) as peer:
        settings: dict[str, Any] = {"endpoint": f"http://127.0.0.1:{peer.port}/oauth"}
        if behaviour.startswith("proxy"):
            proxy = f"http://swan-user:{quote(password, safe='')}@127.0.0.1:{peer.port}"
            target = (
                "https://127.0.0.1:9/oauth"
                if behaviour.endswith("connect")
                else "http://127.0.0.1:9/oauth"
            )
            settings = {"endpoint": target, "proxy": proxy}
        async with SwanAuthClient(
            "client-id", secret, backoff=wait_none(), timeout=5.0, max_attempts=2, **settings
        ) as client:
            try:
                await client.exchange(code)
            except SwanAuthError as error:
                return error
    raise AssertionError(f"{behaviour}: the call succeeded")


def _assert_nothing_leaks(error: SwanAuthError, secret: str, code: str, password: str) -> None:
    hidden = _wire_forms(secret) | _wire_forms(password)
    # The Basic token as aiohttp sends it (Latin-1) and as a UTF-8 echo of it would read.
    hidden.add(base64.b64encode(f"swan-user:{password}".encode("latin-1")).decode())
    hidden.add(base64.b64encode(f"swan-user:{password}".encode()).decode())
    code_forms = _wire_forms(code)
    # As a repr quotes them (aiohttp quotes the bytes it could not parse), and their first
    # characters alone (it quotes only the start of a line that is too long).
    quoted = {repr(form.encode())[2:-1] for form in hidden | code_forms}
    quoted |= {repr(form)[1:-1] for form in hidden | code_forms}
    starts = {form[:6] for form in hidden | code_forms}
    for link in _chain(error):
        texts = [str(link), repr(link), repr(getattr(link, "description", None))]
        texts += [repr(getattr(link, "error", None)), repr(link.args)]
        for text in texts:
            for form in hidden | code_forms | quoted:
                assert form not in text, (type(link).__name__, form, text)
            if isinstance(link, aiohttp.ClientError):
                for start in starts:
                    assert start not in text, (type(link).__name__, start, text)
    for filename, function, local_vars in traceback_frames(error):
        if filename == __file__:
            continue  # this test's own frames hold the secret it made up
        for name, value in local_vars.items():
            for text in _reprs(value):
                for form in hidden:
                    assert form not in text, (filename, function, name)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    behaviour=st.sampled_from(ECHOES + RESETS + PROXIES),
    status=st.sampled_from([200, 400, 401, 500, 503]),
    secret=NASTY.map(lambda text: f"sk{text}"),
    code=NASTY.map(lambda text: f"cd{text}"),
    password=NASTY_LATIN_1.map(lambda text: f"pw{text}"),
)
def test_no_secret_in_any_form_anywhere_in_a_failed_calls_chain(
    behaviour: str, status: int, secret: str, code: str, password: str
) -> None:
    error = asyncio.run(_fail(behaviour, status, secret, code, password))
    _assert_nothing_leaks(error, secret, code, password)


def test_the_peer_plays_each_part() -> None:
    """The hostile peer really does what the property test relies on: one example of each,
    with a secret and a code that change under encoding."""
    secret, code, password = "sk/+= &%@é", "cd@a/b+c d", "pw:/@%"
    kinds = {}
    for behaviour in ECHOES + RESETS + PROXIES:
        error = asyncio.run(_fail(behaviour, 400, secret, code, password))
        _assert_nothing_leaks(error, secret, code, password)
        printed = "".join(traceback.format_exception(error))  # what a plain log handler prints
        for form in _wire_forms(secret) | _wire_forms(code) | _wire_forms(password):
            assert form not in printed, (behaviour, form)
        kinds[behaviour] = error.kind
        if behaviour.startswith(("json", "error_token")):
            assert "***" in (error.description or ""), behaviour
    assert kinds["reset_on_accept"] == "transport"
    assert kinds["reset_after_request"] == "transport"
    assert kinds["proxy_407_connect"] == "transport"
    assert kinds["not_http_status_line"] == "response"


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A proxy that reads the request and never answers, until the client hangs up."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()
    writer.close()


async def test_a_cancelled_call_through_a_proxy_keeps_its_password_out_of_the_chain() -> None:
    """A caller's own timeout (``asyncio.wait_for``) and ``aclose()`` mid-call cancel the call
    inside aiohttp, whose frames hold the proxy's URL, password and all."""
    password = "pw-proxy-P4ss"
    server = await asyncio.start_server(_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caught: list[BaseException] = []
    try:
        async with SwanAuthClient(
            "client-id",
            "sk-the-app-secret",
            endpoint="http://127.0.0.1:9/oauth",
            proxy=f"http://swan-user:{password}@127.0.0.1:{port}",
        ) as client:
            try:
                await asyncio.wait_for(client.exchange("cd-code-value-1"), 0.3)
            except TimeoutError as error:
                caught.append(error)
            call = asyncio.create_task(client.exchange("cd-code-value-2"))
            await asyncio.sleep(0.2)
            await client.aclose()
            try:
                await call
            except SwanAuthError as error:
                caught.append(error)
    finally:
        server.close()
        await server.wait_closed()

    assert [type(error).__name__ for error in caught] == ["TimeoutError", "ClientClosedError"]
    hidden = _wire_forms(password) | _wire_forms("sk-the-app-secret")
    for error in caught:
        for filename, function, local_vars in traceback_frames(error):
            if filename == __file__:
                continue
            for name, value in local_vars.items():
                for text in _reprs(value):
                    for form in hidden:
                        assert form not in text, (filename, function, name)


@pytest.mark.parametrize(
    ("behaviour", "endpoint"),
    [("proxy_407_connect", "https://127.0.0.1:9/o"), ("proxy_echo", "http://127.0.0.1:9/o")],
)
async def test_the_proxy_of_a_borrowed_session_is_blanked_too(
    behaviour: str, endpoint: str
) -> None:
    password = "pw-borrowed-P4ss"
    async with HostilePeer(behaviour, 400) as peer:
        proxy = f"http://swan-user:{password}@127.0.0.1:{peer.port}"
        async with aiohttp.ClientSession(proxy=proxy) as session:
            client = SwanAuthClient(
                "client-id", "sk-the-app-secret", endpoint=endpoint, session=session
            )
            try:
                await client.exchange("cd-code-value-3")
            except SwanAuthError as error:
                caught = error
            else:
                raise AssertionError("the proxy let the call through")
            await client.aclose()
    _assert_nothing_leaks(caught, "sk-the-app-secret", "cd-code-value-3", password)
    if behaviour == "proxy_407_connect":
        assert isinstance(caught.__cause__, aiohttp.ClientHttpProxyError), "aiohttp's type is kept"
        assert caught.__cause__.status == 407
    else:
        assert "Basic ***" in (caught.description or ""), "the proxy's echo was read, and blanked"
