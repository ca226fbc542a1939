"""The faults a test scripts instead of a normal answer, each with its behaviour.

Every fault answers through its own ``_respond`` method, given the request as an ``Exchange``:
the few things a fault may do to a request (compute the normal answer, spending the code or not;
send a reply; drop the connection; send half a body; stream one; send one verbatim). The server
calls ``fault._respond(exchange)`` and knows no fault by name; ``_exchange`` implements the
protocol on aiohttp. A subclass of a fault inherits its behaviour, and a ``Fault`` that defines
none is refused with ``TypeError``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._wire import HTML_MIME, Reply, filler, html_reply, json_reply

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "Arbitrary",
    "Delay",
    "Drop",
    "ErrnoBody",
    "ErrorStatus",
    "Fault",
    "HugeBody",
    "RawBody",
    "Redirect",
    "Truncated",
]


class Exchange(Protocol):
    """One request to one of the APIs, as a fault's ``_respond`` sees it."""

    @property
    def redirect_target(self) -> str:
        """The URL of the fake's stand-in that answers like the request's API."""
        ...

    def answer(self, *, spend: bool) -> Reply:
        """The request's API's normal answer; spends a code or issues a token only if ``spend``."""
        ...

    async def send(self, reply: Reply) -> web.StreamResponse:
        """Send ``reply`` whole."""
        ...

    def drop(self, *, reset: bool) -> web.StreamResponse:
        """Close the connection without answering (with a TCP reset if ``reset``)."""
        ...

    async def send_half(self, body: bytes) -> web.StreamResponse:
        """Announce ``body`` as a 200 JSON answer, send its first half, close the connection."""
        ...

    async def stream(
        self, chunks: Iterator[bytes], size: int, *, status: int, chunked: bool
    ) -> web.StreamResponse:
        """Stream ``size`` bytes of JSON-typed ``chunks``, stopping quietly if the client goes."""
        ...

    async def send_verbatim(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes
    ) -> web.StreamResponse:
        """Send exactly this status, these headers in order and this body."""
        ...


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

    Faults are immutable values, each carrying its own behaviour (a subclass of a fault behaves
    like that fault). Give them to
    [`FakeBaiduServer.script`][baidu_swan_auth.testing.FakeBaiduServer.script],
    [`script_next`][baidu_swan_auth.testing.FakeBaiduServer.script_next] or
    [`always`][baidu_swan_auth.testing.FakeBaiduServer.always], or
    [`script_path`][baidu_swan_auth.testing.FakeBaiduServer.script_path]. Unless a fault says
    otherwise, the request's code is **not** spent, so a retry can still succeed; on the token
    API, "spending" means issuing the token, as a normal answer would.
    """

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        """Answer (or fail to answer) the request ``exchange`` carries."""
        raise TypeError(f"unsupported fault: {self!r}")


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
        if self.error is None:
            return await exchange.send(html_reply(self.status, headers))
        description = self.description or f"{self.error} (simulated)"
        payload: dict[str, object] = {"error": self.error, "error_description": description}
        return await exchange.send(json_reply(self.status, payload, **headers))


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        payload: dict[str, object] = {self.key: self.errno, self.msg_key: self.msg}
        return await exchange.send(json_reply(self.status, payload))


@attrs.frozen
class Delay(Fault):
    """Wait, then handle the request normally.

    The code is checked and spent *after* the wait, even if the client gave up meanwhile: the
    server does not notice a client hanging up, as a real backend would not.

    Attributes:
        seconds: How long to wait.
    """

    seconds: float = attrs.field(validator=_non_negative)

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.seconds)
        return await exchange.send(exchange.answer(spend=True))


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        if self.spend:
            exchange.answer(spend=True)
        return exchange.drop(reset=self.reset)


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        if self.spend:
            exchange.answer(spend=True)
        return await exchange.send(Reply(self.status, self.body, self.content_type))


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        if self.spend:
            exchange.answer(spend=True)
        return await exchange.stream(
            filler(self.size), self.size, status=self.status, chunked=self.chunked
        )


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        return await exchange.send_half(exchange.answer(spend=self.spend).body)


@attrs.frozen
class Redirect(Fault):
    """Answer with a redirect. The code is not spent.

    A client that follows a 307/308 re-sends the form, secret included, to ``location``.

    Attributes:
        status: The redirect status.
        location: The ``Location`` header; by default the fake's own
            ``http://127.0.0.1:{port}/elsewhere`` (followed by the path, for the access-token
            APIs), which answers like the endpoint the request was for.
    """

    status: int = attrs.field(default=307, validator=_http_status)
    location: str | None = None

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        location = self.location or exchange.redirect_target
        return await exchange.send(Reply(self.status, b"", HTML_MIME, {"Location": location}))


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

    async def _respond(self, exchange: Exchange) -> web.StreamResponse:
        if self.spend:
            exchange.answer(spend=True)
        return await exchange.send_verbatim(self.status, self.headers, self.body)
