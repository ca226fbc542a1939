"""A fake of Baidu's ``jscode2sessionkey`` endpoint, for tests, demos and benchmarks.

[`FakeBaiduServer`][baidu_swan_auth.testing.FakeBaiduServer] is a real HTTP server on the
loopback interface. It speaks the same protocol as
``https://spapi.baidu.com/oauth/jscode2sessionkey``: single-use codes, a form-encoded ``POST``
body carrying ``code``, ``client_id`` and ``sk``, and OAuth-style JSON errors. Tests issue codes,
script faults (gateway errors, dropped connections, truncated or huge bodies, redirects, delays,
arbitrary answers for fuzzing) and then inspect what the server received. Given an
``ssl.SSLContext`` it serves HTTPS instead, to test TLS settings.

Example:
    ```python
    async with FakeBaiduServer() as fake:
        code = fake.issue_code(openid="user-1")
        fake.script(code, ErrorStatus(503, retry_after="1"))
        ...  # exchange `code` against `fake.url` with `fake.client_id` / `fake.secret`
        assert fake.is_spent(code)
    ```

From synchronous code (or any event loop), run it on its own thread instead:

```python
with FakeBaiduServer() as fake:
    ...
```

This module deliberately imports neither pytest nor the client: the CLI demo and benchmark
scripts use it on their own. Run ``python -m baidu_swan_auth.testing`` to serve it in the
foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hmac
import html
import http
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import attrs
from aiohttp import web
from multidict import CIMultiDict

from . import crypto as _crypto

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SECRET",
    "ENDPOINT_PATH",
    "REDIRECT_TARGET_PATH",
    "Arbitrary",
    "Delay",
    "Drop",
    "ErrnoBody",
    "ErrorStatus",
    "FakeBaiduServer",
    "Fault",
    "Grant",
    "HugeBody",
    "RawBody",
    "RecordedRequest",
    "Redirect",
    "Truncated",
    "UnknownCodeError",
    "encrypt_user_data",
    "main",
]

DEFAULT_CLIENT_ID = "fake-client-id"
"""The AppKey the fake accepts unless told otherwise."""

DEFAULT_SECRET = "fake-secret-0123456789abcdef"  # noqa: S105 - a well-known fake, never real
"""The AppSecret the fake accepts unless told otherwise. Obviously not a real secret."""

ENDPOINT_PATH = "/oauth/jscode2sessionkey"
"""The path of the exchange endpoint, the same as on ``spapi.baidu.com``."""

REDIRECT_TARGET_PATH = "/elsewhere"
"""Where a [`Redirect`][baidu_swan_auth.testing.Redirect] points by default.

It answers like the endpoint, so a client that follows the redirect "succeeds"; its requests
are recorded with this path so that a test can prove nothing reached it.
"""

_FORM_MIME = "application/x-www-form-urlencoded"
_JSON_MIME = "application/json; charset=utf-8"
_HTML_MIME = "text/html; charset=utf-8"
_STREAM_CHUNK = 64 * 1024
_SHUTDOWN_TIMEOUT = 1.0


class UnknownCodeError(LookupError):
    """Raised when asking the fake about a code it never issued."""


# --------------------------------------------------------------------------------------------
# Value types


@attrs.frozen
class Grant:
    """What the fake answers for a valid code.

    Attributes:
        openid: The user's id for this mini program.
        session_key: Base64 of 24 random bytes (32 characters), like Baidu's. Kept out of
            ``repr`` because a real one is a secret.
    """

    openid: str
    session_key: str = attrs.field(repr=False)


@attrs.frozen
class RecordedRequest:
    """One HTTP request the fake received, whatever its path and whether it was valid.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The URL path, e.g. ``"/oauth/jscode2sessionkey"``.
        query_string: The raw query string (without ``?``); it should always be empty.
        headers: Request headers, names lower-cased; repeated headers joined with ``", "``.
        form: The fields of an ``application/x-www-form-urlencoded`` body (empty otherwise).
        body: The raw request body.
        code: The form's ``code`` field, or ``None``.
        fault: Class name of the [`Fault`][baidu_swan_auth.testing.Fault] applied to this
            request, or ``None`` when it was handled normally.
        host_header: The ``Host`` header as sent, or ``None``.
        connection: Sequence number (from 1) of the TCP connection that carried the request;
            equal numbers mean the request reused a kept-alive connection.
        received_at: ``time.monotonic()`` when the request arrived, to measure retry delays.
    """

    method: str
    path: str
    query_string: str
    headers: dict[str, str] = attrs.field(repr=False)
    form: dict[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    code: str | None = attrs.field(repr=False)
    fault: str | None
    host_header: str | None
    connection: int = 0
    received_at: float = attrs.field(default=0.0, repr=False)

    def header(self, name: str) -> str | None:
        """Return a request header by case-insensitive name.

        Args:
            name: The header name, in any case.

        Returns:
            The header value, or ``None`` when the request did not carry it.
        """
        return self.headers.get(name.lower())


# --------------------------------------------------------------------------------------------
# Faults


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _http_status(_instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 100 <= value <= 999:
        raise ValueError(f"{attribute.name} must be an HTTP status (100-999), got {value!r}")


def _final_status(_instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 200 <= value <= 999:
        raise ValueError(
            f"{attribute.name} must be a final HTTP status (200-999), got {value!r}: a 1xx is an "
            "interim response, after which the client keeps waiting for the real answer"
        )


# Headers that frame the message or manage the connection. The server sets them itself; a
# scripted one would make it lie about the body's length or the connection's state and
# desynchronise the connection (Truncated and HugeBody script those failures on purpose).
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_pairs(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    return tuple((name, text) for name, text in pairs)


def _allowed_headers(
    _instance: object, attribute: attrs.Attribute[Any], value: tuple[tuple[str, str], ...]
) -> None:
    for name, text in value:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{attribute.name}: {name!r} is not an HTTP header name")
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(
                f"{attribute.name}: {name} frames the message or manages the connection; the "
                "server sets it (use Truncated or HugeBody for broken framing)"
            )
        if not isinstance(text, str) or any(
            (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in text
        ):
            raise ValueError(f"{attribute.name}: the value of {name} has control characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            message = f"{attribute.name}: the value of {name} is not valid Unicode"
            raise ValueError(message) from None


@attrs.frozen
class Fault:
    """Base class of everything that can be scripted instead of a normal answer.

    Faults are plain data; the server interprets them. Give them to
    [`FakeBaiduServer.script`][baidu_swan_auth.testing.FakeBaiduServer.script],
    [`script_next`][baidu_swan_auth.testing.FakeBaiduServer.script_next] or
    [`always`][baidu_swan_auth.testing.FakeBaiduServer.always]. Unless a fault says otherwise,
    the request's code is **not** spent, so a retry can still succeed.
    """


@attrs.frozen
class ErrorStatus(Fault):
    """Answer with an HTTP status, like an overloaded gateway or an OAuth error.

    With ``error`` the body is Baidu's JSON error shape
    ``{"error": ..., "error_description": ...}`` (use it for ``slow_down`` on a 200 or
    ``invalid_client`` on a 400, too); without it, a small HTML page like a gateway's.
    The code is not spent.

    Attributes:
        status: The HTTP status to answer.
        error: The OAuth ``error`` string for a JSON body, or ``None`` for an HTML page.
        description: The ``error_description``; a generic one when ``None``.
        retry_after: Value of a ``Retry-After`` header (seconds or an HTTP date, sent as is),
            or ``None`` for no header.
        delay: Seconds to wait before answering.
    """

    status: int = attrs.field(validator=_http_status)
    error: str | None = attrs.field(default=None, kw_only=True)
    description: str | None = attrs.field(default=None, kw_only=True)
    retry_after: str | None = attrs.field(default=None, kw_only=True)
    delay: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)


@attrs.frozen
class ErrnoBody(Fault):
    """Answer with the numeric error shape that Baidu's other APIs use.

    The body is ``{key: errno, "errmsg": msg}``, or ``{key: errno, "error_msg": msg}`` when
    ``key`` is ``"error_code"``. The code is not spent.

    Attributes:
        errno: The numeric error code.
        msg: The error message.
        status: The HTTP status (Baidu sends these on a 200).
        key: The name of the numeric field, usually ``"errno"`` or ``"error_code"``.
    """

    errno: int
    msg: str = "simulated error"
    status: int = attrs.field(default=200, kw_only=True, validator=_http_status)
    key: str = attrs.field(default="errno", kw_only=True)

    @property
    def msg_key(self) -> str:
        """The name of the message field that goes with `key`."""
        return "error_msg" if self.key == "error_code" else "errmsg"


@attrs.frozen
class Delay(Fault):
    """Wait, then handle the request normally.

    The code is checked and spent *after* the wait, even if the client gave up meanwhile: the
    server does not notice a client hanging up, as a real backend would not.

    Attributes:
        seconds: How long to wait.
    """

    seconds: float = attrs.field(validator=_non_negative)


@attrs.frozen
class Drop(Fault):
    """Read the whole request, then close the connection without answering.

    The client sees ``aiohttp.ServerDisconnectedError`` (or, with ``reset=True``, a connection
    reset: ``aiohttp.ClientOSError``). This is the "did Baidu get it or not?" case: with
    ``spend=True`` the code was used although the client never learns the answer.

    Attributes:
        spend: Spend the code (when the request is otherwise valid) before dropping.
        delay: Seconds to wait before dropping.
        reset: Abort with a TCP reset instead of an orderly close.
    """

    spend: bool = attrs.field(default=False, kw_only=True)
    delay: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)
    reset: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class RawBody(Fault):
    """Answer with exactly these bytes: an HTML page, non-JSON, a JSON list, ...

    Attributes:
        body: The response body.
        status: The HTTP status.
        content_type: The ``Content-Type`` header, sent as is.
        delay: Seconds to wait before answering.
        spend: Spend the code (when the request is otherwise valid).
    """

    body: bytes
    status: int = attrs.field(default=200, kw_only=True, validator=_http_status)
    content_type: str = attrs.field(default="application/json", kw_only=True)
    delay: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)
    spend: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class HugeBody(Fault):
    """Answer with a body far larger than any real answer, streamed so the server stays small.

    The body is ``size`` bytes of filler shaped like a JSON object (plain filler when ``size``
    is tiny). Streaming stops quietly if the client goes away.

    Attributes:
        size: Body size in bytes.
        chunked: Use chunked transfer encoding instead of announcing a ``Content-Length``.
        status: The HTTP status.
        spend: Spend the code (when the request is otherwise valid).
    """

    size: int = attrs.field(default=8 * 2**20, validator=_non_negative)
    chunked: bool = attrs.field(default=False, kw_only=True)
    status: int = attrs.field(default=200, kw_only=True, validator=_http_status)
    spend: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class Truncated(Fault):
    """Announce a full body, send only its first half, then close the connection.

    The status is 200 and ``Content-Length`` is the length of the whole answer the request
    would normally get (a grant for a valid code), so reading the body fails with
    ``aiohttp.ClientPayloadError``.

    Attributes:
        spend: Spend the code (when the request is otherwise valid). On by default: the
            answer was produced, only its delivery failed.
    """

    spend: bool = attrs.field(default=True, kw_only=True)


@attrs.frozen
class Redirect(Fault):
    """Answer with a redirect. The code is not spent.

    A client that follows a 307/308 re-sends the form, secret included, to ``location``.

    Attributes:
        status: The redirect status.
        location: The ``Location`` header; by default the fake's own
            ``http://127.0.0.1:{port}/elsewhere``, which answers like the endpoint.
    """

    status: int = attrs.field(default=307, validator=_http_status)
    location: str | None = None


@attrs.frozen
class Arbitrary(Fault):
    """Answer with exactly this status, these headers and this body: for fuzzing.

    Anything a broken gateway or a confused Baidu could send, within what keeps HTTP framing
    intact: the server still sets ``Content-Length`` itself, so the client can always read the
    answer to its end. aiohttp adds ``Date`` and ``Server`` when they are not given, and
    ``Content-Type: application/octet-stream`` when no ``Content-Type`` is; a 204 or 304
    carries no body whatever ``body`` says. ``Content-Encoding`` is sent as given, so a body
    that does not match it is a way to test decoding failures.

    Attributes:
        status: The HTTP status, 200 to 999. A 1xx is refused: it is an interim response, after
            which the client keeps waiting for the real one.
        headers: ``(name, value)`` pairs, sent in order (a name may repeat), or a mapping. Names
            must be HTTP tokens and values free of control characters but tab. Headers that frame
            the message or manage the connection (``Content-Length``, ``Transfer-Encoding``,
            ``Connection``, ``Keep-Alive``, ``Upgrade``, ``TE``, ``Trailer``,
            ``Proxy-Connection``) are refused: use
            [`Truncated`][baidu_swan_auth.testing.Truncated] or
            [`HugeBody`][baidu_swan_auth.testing.HugeBody] for broken framing.
        body: The response body, any bytes.
        spend: Spend the code (when the request is otherwise valid).

    Raises:
        ValueError: A 1xx status, or a header that is not allowed.
    """

    status: int = attrs.field(validator=_final_status)
    headers: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_header_pairs, validator=_allowed_headers
    )
    body: bytes = b""
    spend: bool = attrs.field(default=False, kw_only=True)


# --------------------------------------------------------------------------------------------
# Encrypted user data


def encrypt_user_data(
    payload: Mapping[str, Any] | bytes,
    iv: str,
    session_key: str,
    app_key: str,
    *,
    random: Callable[[int], bytes] = secrets.token_bytes,
    padding: int | None = None,
) -> str:
    """Encrypt user data the way Baidu does for ``swan.getUserInfo`` and friends.

    The inverse of [`decrypt_user_data`][baidu_swan_auth.decrypt_user_data], for tests: a
    production server only ever decrypts. It lives here rather than in ``baidu_swan_auth.crypto``
    for that reason. With Baidu's 16 random bytes fixed through ``random``, it reproduces Baidu's
    ciphertext byte for byte. Needs the ``crypto`` extra.

    Args:
        payload: A JSON object, encoded compactly as UTF-8 (non-ASCII kept as is), or the exact
            payload bytes, which need not be JSON (to test how your code handles bad data).
        iv: Base64 of 16 bytes.
        session_key: Base64 of 24 bytes, e.g. a [`Grant`][baidu_swan_auth.testing.Grant]'s.
        app_key: The AppKey appended after the payload.
        random: Returns ``n`` random bytes: the source of the 16-byte random prefix.
        padding: The pad count, from 1 to 32, such that the padded length is a multiple of 16.
            ``None``: Baidu's padding, to a multiple of 32.

    Returns:
        The encrypted data, standard base64, as the mini program receives it.

    Raises:
        ValueError: The key or IV has the wrong size, or ``padding`` does not fit.
        MissingDependencyError: The ``cryptography`` package is not installed.
    """
    _crypto._require_cryptography("encrypting")
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    key = base64.b64decode(session_key, validate=True)
    iv_bytes = base64.b64decode(iv, validate=True)
    if len(key) != _crypto.KEY_SIZE or len(iv_bytes) != _crypto.IV_SIZE:
        raise ValueError("the session key must be 24 bytes and the IV 16 bytes")
    if isinstance(payload, bytes):
        body = payload
    else:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    prefix = random(_crypto.PREFIX_SIZE)
    if len(prefix) != _crypto.PREFIX_SIZE:
        raise ValueError("random(16) must return 16 bytes")
    plain = prefix + struct.pack(">I", len(body)) + body + app_key.encode("utf-8")
    if padding is None:
        padding = _crypto.PAD_BLOCK - len(plain) % _crypto.PAD_BLOCK
    if not 1 <= padding <= _crypto.PAD_BLOCK or (len(plain) + padding) % _crypto.BLOCK_SIZE:
        raise ValueError(f"padding={padding} does not make whole 16-byte blocks here")
    plain += bytes([padding]) * padding
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv_bytes)).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Internals


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class _ParsedForm:
    fields: dict[str, str]
    problem: str | None


def _json_reply(status: int, payload: dict[str, object], **headers: str) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return _Reply(status, body, _JSON_MIME, dict(headers))


def _oauth_error(status: int, error: str, description: str) -> _Reply:
    return _json_reply(status, {"error": error, "error_description": description})


def _html_page(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = html.escape(f"{status} {phrase}")
    # Shaped like the pages nginx-style gateways send, which is what clients meet in practice.
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>fake-gateway</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _parse_form(content_type: str, body: bytes) -> _ParsedForm:
    if not body:
        return _ParsedForm({}, None)
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime != _FORM_MIME:
        return _ParsedForm({}, f"the body must be {_FORM_MIME}")
    try:
        text = body.decode("ascii")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return _ParsedForm({}, "the form body is not valid percent-encoded UTF-8")
    fields: dict[str, str] = {}
    problem = None
    for name, value in pairs:
        if name in fields:
            # A repeated field is ambiguous (which one would Baidu use?); refuse it loudly.
            problem = f"parameter {name!r} is repeated"
            continue
        fields[name] = value
    return _ParsedForm(fields, problem)


def _filler(size: int) -> Iterator[bytes]:
    head, tail = b'{"filler":"', b'"}'
    if size < len(head) + len(tail):
        if size:
            yield b"x" * size
        return
    remaining = size - len(head) - len(tail)
    first = min(remaining, _STREAM_CHUNK)
    yield head + b"x" * first
    remaining -= first
    block = b"x" * _STREAM_CHUNK
    while remaining >= _STREAM_CHUNK:
        yield block
        remaining -= _STREAM_CHUNK
    yield b"x" * remaining + tail


def _new_session_key() -> str:
    return base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def _new_openid() -> str:
    return secrets.token_urlsafe(21)


def _url_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        # Listening on every interface: the loopback address is the one that surely connects.
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


# --------------------------------------------------------------------------------------------
# The server


class FakeBaiduServer:
    """A fake Baidu ``jscode2sessionkey`` endpoint served over real HTTP on the loopback.

    Use it as ``async with FakeBaiduServer() as fake:`` inside an event loop, or as
    ``with FakeBaiduServer() as fake:`` to run it on its own loop in a daemon thread (which
    works from synchronous code and from any async framework).

    Every method that tests call (issuing codes, scripting faults, reading the log) is
    thread-safe, so a test may call them while the server runs on its thread.

    Normal handling of a request to [`ENDPOINT_PATH`][baidu_swan_auth.testing.ENDPOINT_PATH]:
    ``POST`` only (else 405 ``invalid_request``); ``code``, ``client_id`` and ``sk`` are read
    from the form body only, never the query string (missing: 400 ``invalid_request``); a wrong
    ``client_id`` or ``sk`` gives 401 ``invalid_client``; an unknown or spent code gives 400
    ``invalid_grant``; otherwise the code is spent and the answer is 200
    ``{"openid": ..., "session_key": ...}``. Other paths get a 404 HTML page.

    Faults apply to requests to the endpoint path only, taken in this order: the
    [`always`][baidu_swan_auth.testing.FakeBaiduServer.always] fault, then the
    [`script_next`][baidu_swan_auth.testing.FakeBaiduServer.script_next] queue, then the
    request code's [`script`][baidu_swan_auth.testing.FakeBaiduServer.script] queue.

    Args:
        client_id: The AppKey the fake accepts.
        secret: The AppSecret the fake accepts. Never shown in ``repr`` or error bodies.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        auto_issue: Accept any code never seen before (once), as if it had been issued. Lets a
            load generator in another process invent codes.
        record_requests: Keep every request in `requests`. Turn it off for long benchmark
            runs, where the log would only grow.
        ssl_context: Serve HTTPS with this server-side context (its certificate and key, e.g.
            from ``trustme``) instead of plain HTTP; `url` then starts with ``https://``.

    Attributes:
        client_id: The AppKey the fake accepts; may be changed while it runs.
        secret: The AppSecret the fake accepts; may be changed while it runs.
        host: The address it listens on.
        auto_issue: Whether unknown codes are accepted once.
        record_requests: Whether requests are recorded.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        secret: str = DEFAULT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_issue: bool = False,
        record_requests: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.client_id = client_id
        self.secret = secret
        self.host = host
        self.auto_issue = auto_issue
        self.record_requests = record_requests
        self._requested_port = port
        self._port: int | None = None
        self._ssl_context = ssl_context

        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        self._spent: set[str] = set()
        self._always: Fault | None = None
        self._next_faults: collections.deque[Fault] = collections.deque()
        self._code_faults: dict[str, collections.deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._connections_opened = 0
        self._in_flight = 0
        self._max_in_flight = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._web_server: web.Server | None = None
        self._tcp_server: asyncio.Server | None = None
        self._closed = False
        self._handler_tasks: dict[asyncio.Task[Any], web.BaseRequest] = {}
        # Protocol -> connection number; pruned of closed connections as it grows.
        self._connection_ids: dict[object, int] = {}
        self._prune_at = 1024

        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        with self._lock:
            issued, spent = len(self._grants), len(self._spent)
        return (
            f"<FakeBaiduServer {where} client_id={self.client_id!r} codes={issued} spent={spent}>"
        )

    # ---------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        Raises:
            RuntimeError: The server is not started.
        """
        if self._port is None:
            raise RuntimeError("FakeBaiduServer is not started")
        return self._port

    @property
    def scheme(self) -> str:
        """``"https"`` when the server was given an ``ssl_context``, else ``"http"``."""
        return "http" if self._ssl_context is None else "https"

    @property
    def base_url(self) -> str:
        """``http://host:port`` (or ``https://``) without a path."""
        return f"{self.scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint URL to give the client: ``http://127.0.0.1:{port}/oauth/jscode2sessionkey``
        (``https://`` with an ``ssl_context``)."""
        return f"{self.base_url}{ENDPOINT_PATH}"

    # ---------------------------------------------------------------- lifecycle (same loop)

    async def start(self) -> None:
        """Start listening on the running event loop.

        Raises:
            RuntimeError: The server was already started.
        """
        if self._loop is not None:
            raise RuntimeError("FakeBaiduServer can only be started once")
        loop = asyncio.get_running_loop()
        # handler_cancellation stays False on purpose: a real backend keeps working on a request
        # whose client hung up, so a delayed request must still spend its code.
        # access_log=None: logging every request only slows benchmarks down.
        self._web_server = web.Server(self._handle, handler_cancellation=False, access_log=None)
        try:
            self._tcp_server = await loop.create_server(
                self._make_protocol,
                self.host,
                self._requested_port,
                backlog=1024,
                ssl=self._ssl_context,
            )
        except BaseException:
            self._web_server = None
            raise
        self._loop = loop
        self._port = int(self._tcp_server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop the server. Safe to call more than once.

        Requests still being handled get a second to finish, then are cancelled.

        Raises:
            RuntimeError: Called from another event loop than the one the server runs on
                (use [`stop_thread`][baidu_swan_auth.testing.FakeBaiduServer.stop_thread] for a
                server started with `start_in_thread`).
        """
        if self._loop is None or self._closed:
            return
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                "close() must run on the server's event loop; use stop_thread() for a server "
                "started with start_in_thread()"
            )
        self._closed = True
        assert self._tcp_server is not None
        assert self._web_server is not None
        self._tcp_server.close()
        # A handler whose client already hung up has nobody to answer; cancel it now rather
        # than letting the shutdown below wait out its grace period for nothing. The short
        # sleep lets a hang-up already on the wire be noticed first.
        if self._handler_tasks:
            await asyncio.sleep(0.02)
        for task, request in list(self._handler_tasks.items()):
            if request.transport is None:
                task.cancel()
        # pre_shutdown() wakes idle keep-alive connections so they close at once; without it
        # shutdown() waits the whole timeout for each of them.
        self._web_server.pre_shutdown()
        await self._web_server.shutdown(_SHUTDOWN_TIMEOUT)
        await self._tcp_server.wait_closed()
        # Whatever still runs (e.g. cancelled above) must finish before the loop may close.
        leftovers = [task for task in self._handler_tasks if not task.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        """Start the server on the running loop."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server."""
        await self.close()

    # ---------------------------------------------------------------- lifecycle (own thread)

    def start_in_thread(self, *, timeout: float = 10.0) -> None:
        """Run the server on a new event loop in a daemon thread; return once it listens.

        Args:
            timeout: How long to wait for the server to listen, in seconds.

        Raises:
            RuntimeError: The server was already started, or did not start in time.
            OSError: The address could not be bound.
        """
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("FakeBaiduServer can only be started once")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            with asyncio.Runner() as runner:
                try:
                    runner.run(self.start())
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                self._thread_stop = runner.get_loop().create_future()
                ready.set()
                runner.run(self._serve_until_stopped())

        thread = threading.Thread(target=run, name="FakeBaiduServer", daemon=True)
        self._thread = thread
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("FakeBaiduServer did not start in time")
        if failure:
            thread.join()
            raise failure[0]

    async def _serve_until_stopped(self) -> None:
        assert self._thread_stop is not None
        await self._thread_stop
        await self.close()

    def stop_thread(self, *, timeout: float = 10.0) -> None:
        """Stop a server started with `start_in_thread` and wait for its thread. Idempotent.

        Args:
            timeout: How long to wait for the thread to finish, in seconds.
        """
        thread, stop, loop = self._thread, self._thread_stop, self._loop
        if thread is None:
            return
        if stop is not None and loop is not None and not loop.is_closed():

            def signal_stop() -> None:
                if not stop.done():
                    stop.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(signal_stop)
        thread.join(timeout)

    def __enter__(self) -> Self:
        """Start the server in its own thread (see `start_in_thread`)."""
        self.start_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server's thread."""
        self.stop_thread()

    # ---------------------------------------------------------------- codes

    def issue_code(
        self, *, openid: str | None = None, code: str | None = None, open_source: bool = False
    ) -> str:
        """Register a new single-use code, as ``swan.login()`` would hand one out.

        Args:
            openid: The user's openid; a random one when ``None``. Issue several codes with the
                same openid to model one user logging in again.
            code: The exact code string to register (any characters, e.g. ``"a&b=c@d"``);
                random when ``None``.
            open_source: Make a code containing ``@``, the kind Baidu routes to an open-source
                host. With an explicit ``code`` it must contain ``@``.

        Returns:
            The code.

        Raises:
            ValueError: The code is empty, already issued, or lacks ``@`` for ``open_source``.
        """
        if code is None:
            code = secrets.token_hex(16)
            if open_source:
                code = f"{code}@{secrets.token_hex(4)}"
        elif not code:
            raise ValueError("a code cannot be empty")
        elif open_source and "@" not in code:
            raise ValueError("an open-source code must contain '@'")
        grant = Grant(
            openid=openid if openid is not None else _new_openid(), session_key=_new_session_key()
        )
        with self._lock:
            if code in self._grants:
                raise ValueError("this code was already issued")
            self._grants[code] = grant
        return code

    def grant_for(self, code: str) -> Grant:
        """Return what the fake answers (or answered) for a code.

        Args:
            code: A code from `issue_code` (or auto-issued).

        Raises:
            UnknownCodeError: The code was never issued.
        """
        with self._lock:
            grant = self._grants.get(code)
        if grant is None:
            raise UnknownCodeError("this code was never issued by the fake")
        return grant

    def encrypt_for(
        self, code: str, payload: Mapping[str, Any] | bytes, *, app_key: str | None = None
    ) -> tuple[str, str]:
        """Encrypt user data with the session key of a code, as the mini program would get it.

        Models ``swan.getUserInfo`` (or ``getPhoneNumber``, ...) called after the ``swan.login()``
        that produced ``code``: your server decrypts the result with the session key it got for
        that code. Needs the ``crypto`` extra.

        Args:
            code: A code from `issue_code` (or auto-issued).
            payload: The JSON object (or raw payload bytes) to encrypt; see
                [`encrypt_user_data`][baidu_swan_auth.testing.encrypt_user_data].
            app_key: The AppKey to append; the fake's ``client_id`` by default.

        Returns:
            ``(data, iv)``, both base64, with a fresh random IV.

        Raises:
            UnknownCodeError: The code was never issued.
            MissingDependencyError: The ``cryptography`` package is not installed.
        """
        grant = self.grant_for(code)
        iv = base64.b64encode(secrets.token_bytes(_crypto.IV_SIZE)).decode("ascii")
        data = encrypt_user_data(
            payload, iv, grant.session_key, self.client_id if app_key is None else app_key
        )
        return data, iv

    def is_spent(self, code: str) -> bool:
        """Tell whether a code was already exchanged (or spent by a fault).

        Args:
            code: A code from `issue_code` (or auto-issued).

        Raises:
            UnknownCodeError: The code was never issued.
        """
        with self._lock:
            if code not in self._grants:
                raise UnknownCodeError("this code was never issued by the fake")
            return code in self._spent

    # ---------------------------------------------------------------- fault scripting

    def script(self, code: str, *faults: Fault) -> None:
        """Queue faults for the requests that carry ``code``, first in first out.

        Each request with this code in its form takes one fault; once the queue is empty,
        requests are handled normally. The code need not be issued.

        Args:
            code: The code the faults apply to.
            *faults: The faults, in the order requests will meet them.
        """
        with self._lock:
            self._code_faults.setdefault(code, collections.deque()).extend(faults)

    def script_next(self, *faults: Fault) -> None:
        """Queue faults for the next requests to the endpoint, whatever their code.

        Args:
            *faults: The faults, in the order requests will meet them.
        """
        with self._lock:
            self._next_faults.extend(faults)

    def always(self, fault: Fault | None) -> None:
        """Apply ``fault`` to every request to the endpoint until ``always(None)``.

        Args:
            fault: The fault, or ``None`` to go back to scripted and normal handling.
        """
        with self._lock:
            self._always = fault

    def _take_fault(self, code: str | None) -> Fault | None:
        with self._lock:
            if self._always is not None:
                return self._always
            if self._next_faults:
                return self._next_faults.popleft()
            if code is not None and (queue := self._code_faults.get(code)):
                fault = queue.popleft()
                if not queue:
                    del self._code_faults[code]
                return fault
        return None

    # ---------------------------------------------------------------- observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy); empty if not `record_requests`."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, code: str) -> list[RecordedRequest]:
        """The requests whose form carried ``code``, oldest first.

        Args:
            code: The code to look for.
        """
        with self._lock:
            return [request for request in self._requests if request.code == code]

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server accepted."""
        with self._lock:
            return self._connections_opened

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now.

        A request counts from its arrival until its answer is written or its connection is
        dropped by the fake. A delayed request whose client hung up still counts until its
        delay is over, because the fake keeps working on it (and spends its code then).
        """
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The highest `in_flight` seen since start or the last `reset_stats`."""
        with self._lock:
            return self._max_in_flight

    def reset_stats(self) -> None:
        """Forget recorded requests, and reset `connections_opened` and `max_in_flight`."""
        with self._lock:
            self._requests.clear()
            self._connections_opened = 0
            self._max_in_flight = self._in_flight

    # A timeout parameter and polling, not an asyncio.Event: in threaded mode in_flight changes
    # on another loop, and callers want a bounded wait without ceremony.
    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being handled, e.g. a delayed one whose client gave up.

        Works from any event loop, whether the server runs on it or on its own thread.

        Args:
            timeout: How long to wait, in seconds.

        Raises:
            TimeoutError: Requests were still in flight after ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while self.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    # ---------------------------------------------------------------- request handling

    def _make_protocol(self) -> asyncio.Protocol:
        assert self._web_server is not None
        protocol = self._web_server()
        with self._lock:
            self._connections_opened += 1
            number = self._connections_opened
            if len(self._connection_ids) >= self._prune_at:
                self._connection_ids = {
                    proto: n
                    for proto, n in self._connection_ids.items()
                    if getattr(proto, "transport", None) is not None
                }
                self._prune_at = max(1024, 2 * len(self._connection_ids))
            self._connection_ids[protocol] = number
        return protocol

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handler_tasks[task] = request
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._dispatch(request)
        finally:
            with self._lock:
                self._in_flight -= 1
            if task is not None:
                self._handler_tasks.pop(task, None)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = time.monotonic()
        try:
            body = await request.read()
        except ConnectionError:
            # The client vanished mid-body; there is nobody to answer.
            return web.Response()
        parsed = _parse_form(request.headers.get("Content-Type", ""), body)
        code = parsed.fields.get("code")
        fault = self._take_fault(code) if request.path == ENDPOINT_PATH else None
        if self.record_requests:
            self._record(request, body, parsed, fault, received_at)

        if fault is None:
            return await self._send(request, self._answer(request, parsed, spend=True))
        return await self._apply(request, parsed, fault)

    def _record(
        self,
        request: web.BaseRequest,
        body: bytes,
        parsed: _ParsedForm,
        fault: Fault | None,
        received_at: float,
    ) -> None:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query_string=request.query_string,
                    headers=headers,
                    form=parsed.fields,
                    body=body,
                    code=parsed.fields.get("code"),
                    fault=type(fault).__name__ if fault is not None else None,
                    host_header=request.headers.get("Host"),
                    connection=self._connection_ids.get(request.protocol, 0),
                    received_at=received_at,
                )
            )

    def _answer(self, request: web.BaseRequest, parsed: _ParsedForm, *, spend: bool) -> _Reply:
        """Compute the normal answer; spend the code only if ``spend`` and all is valid."""
        if request.path not in (ENDPOINT_PATH, REDIRECT_TARGET_PATH):
            return _Reply(404, _html_page(404), _HTML_MIME)
        if request.method != "POST":
            reply = _oauth_error(405, "invalid_request", "the method must be POST")
            return attrs.evolve(reply, headers={"Allow": "POST"})
        if parsed.problem is not None:
            return _oauth_error(400, "invalid_request", parsed.problem)
        fields = parsed.fields
        for name in ("code", "client_id", "sk"):
            if not fields.get(name):
                return _oauth_error(400, "invalid_request", f"missing parameter: {name}")
        client_ok = hmac.compare_digest(fields["client_id"].encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(fields["sk"].encode(), self.secret.encode())
        if not (client_ok and secret_ok):
            return _oauth_error(401, "invalid_client", "unknown client_id or wrong secret")
        code = fields["code"]
        with self._lock:
            grant = self._grants.get(code)
            if grant is None and self.auto_issue:
                grant = self._grants[code] = Grant(_new_openid(), _new_session_key())
            if grant is None or code in self._spent:
                return _oauth_error(
                    400, "invalid_grant", "the code is invalid, expired or already used"
                )
            if spend:
                self._spent.add(code)
        return _json_reply(200, {"openid": grant.openid, "session_key": grant.session_key})

    async def _send(self, request: web.BaseRequest, reply: _Reply) -> web.StreamResponse:
        response = web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": reply.content_type, **reply.headers},
        )
        # Writing here rather than leaving it to aiohttp keeps the request "in flight" until
        # its answer is really out.
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write_eof()
        return response

    async def _apply(
        self, request: web.BaseRequest, parsed: _ParsedForm, fault: Fault
    ) -> web.StreamResponse:
        if isinstance(fault, Delay):
            await asyncio.sleep(fault.seconds)
            return await self._send(request, self._answer(request, parsed, spend=True))

        if isinstance(fault, ErrorStatus):
            await asyncio.sleep(fault.delay)
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            if fault.error is None:
                reply = _Reply(fault.status, _html_page(fault.status), _HTML_MIME, headers)
            else:
                description = fault.description or f"{fault.error} (simulated)"
                payload: dict[str, object] = {
                    "error": fault.error,
                    "error_description": description,
                }
                reply = _json_reply(fault.status, payload, **headers)
            return await self._send(request, reply)

        if isinstance(fault, ErrnoBody):
            payload = {fault.key: fault.errno, fault.msg_key: fault.msg}
            return await self._send(request, _json_reply(fault.status, payload))

        if isinstance(fault, RawBody):
            await asyncio.sleep(fault.delay)
            if fault.spend:
                self._answer(request, parsed, spend=True)
            reply = _Reply(fault.status, fault.body, fault.content_type)
            return await self._send(request, reply)

        if isinstance(fault, Drop):
            await asyncio.sleep(fault.delay)
            if fault.spend:
                self._answer(request, parsed, spend=True)
            return self._drop(request, reset=fault.reset)

        if isinstance(fault, HugeBody):
            if fault.spend:
                self._answer(request, parsed, spend=True)
            return await self._stream_huge(request, fault)

        if isinstance(fault, Truncated):
            full = self._answer(request, parsed, spend=fault.spend).body
            response = web.StreamResponse(status=200, headers={"Content-Type": _JSON_MIME})
            response.content_length = len(full)
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write(full[: len(full) // 2])
            # close() flushes what was written before the FIN, so the client gets the first
            # half and then an early end of stream.
            return self._drop(request, reset=False, response=response)

        if isinstance(fault, Redirect):
            location = fault.location or f"{self.base_url}{REDIRECT_TARGET_PATH}"
            reply = _Reply(fault.status, b"", _HTML_MIME, {"Location": location})
            return await self._send(request, reply)

        if isinstance(fault, Arbitrary):
            if fault.spend:
                self._answer(request, parsed, spend=True)
            response = web.Response(
                status=fault.status, body=fault.body, headers=CIMultiDict(fault.headers)
            )
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            return response

        raise TypeError(f"unsupported fault: {fault!r}")

    @staticmethod
    def _drop(
        request: web.BaseRequest,
        *,
        reset: bool,
        response: web.StreamResponse | None = None,
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # SO_LINGER with a zero timeout turns close() into a TCP reset.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            else:
                transport.close()
        # aiohttp still "finishes" the returned response; writing to the closing transport
        # raises ConnectionResetError, which aiohttp takes as a client hang-up and ignores,
        # so nothing else reaches the wire and nothing is logged.
        return response if response is not None else web.Response()

    async def _stream_huge(self, request: web.BaseRequest, fault: HugeBody) -> web.StreamResponse:
        response = web.StreamResponse(status=fault.status, headers={"Content-Type": _JSON_MIME})
        if fault.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = fault.size
        # write() waits for the socket to drain past a small buffer, so memory stays flat
        # however large the body; a client hang-up surfaces as ConnectionError.
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            for chunk in _filler(fault.size):
                await response.write(chunk)
            await response.write_eof()
        return response


# --------------------------------------------------------------------------------------------
# Command line


async def _serve(client_id: str, secret: str, host: str, port: int, auto_issue: bool) -> None:
    fake = FakeBaiduServer(
        client_id=client_id,
        secret=secret,
        host=host,
        port=port,
        auto_issue=auto_issue,
        record_requests=False,
    )
    async with fake:
        print(fake.url, flush=True)
        print(
            f"fake Baidu endpoint; client_id={client_id!r}, auto_issue={auto_issue}; "
            "Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows; there Ctrl-C still raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake Baidu endpoint in the foreground until Ctrl-C or SIGTERM.

    The first line on stdout is the endpoint URL. The secret is read from the
    ``BAIDU_SWAN_SECRET`` environment variable (never from the command line, which other users
    can see), else [`DEFAULT_SECRET`][baidu_swan_auth.testing.DEFAULT_SECRET].

    Args:
        argv: Command-line arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m baidu_swan_auth.testing",
        description="Serve a fake Baidu jscode2sessionkey endpoint on the loopback interface.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--client-id",
        default=os.environ.get("BAIDU_SWAN_CLIENT_ID") or DEFAULT_CLIENT_ID,
        help="AppKey to accept (default: $BAIDU_SWAN_CLIENT_ID or %(default)s)",
    )
    parser.add_argument(
        "--auto-issue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accept any code never seen before, once (default: on)",
    )
    args = parser.parse_args(argv)
    secret = os.environ.get("BAIDU_SWAN_SECRET") or DEFAULT_SECRET
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.client_id, secret, args.host, args.port, args.auto_issue))
    return 0


if __name__ == "__main__":
    sys.exit(main())
