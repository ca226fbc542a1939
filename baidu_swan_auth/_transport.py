"""The network's failures, mapped: aiohttp's exceptions to the SDK's errors and their retry class,
and the cause an error keeps, without the frames and text that would show a secret."""

from __future__ import annotations

import re
import ssl

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ._errors import ExchangeTimeoutError, ResponseError, SwanAuthError, TransportError
from ._protocol import Redactor
from ._retry import Disposition

__all__: list[str] = []


def transport_failure(exc: BaseException) -> tuple[SwanAuthError, Disposition]:
    """Map an exception raised while talking to Baidu to the SDK's error and its disposition.

    The order of the checks matters: aiohttp's certificate error is a subclass of its connector
    error, and its connect and read timeouts are subclasses of ``TimeoutError``.
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return TransportError(f"TLS failure talking to Baidu: {exc}"), Disposition.FINAL
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        error = TransportError("Baidu's TLS certificate fingerprint does not match")
        return error, Disposition.FINAL
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ExchangeTimeoutError("timed out connecting to Baidu"), Disposition.SAFE
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(f"could not connect to Baidu ({name})"), Disposition.SAFE
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return ExchangeTimeoutError("timed out reading Baidu's answer"), Disposition.AMBIGUOUS
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ExchangeTimeoutError(f"timed out talking to Baidu ({name})"), Disposition.AMBIGUOUS
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError("Baidu's answer was cut off"), Disposition.AMBIGUOUS
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__, ssl.SSLError):
        # TLS 1.3 servers send some alerts (a client certificate they demand) only after the
        # handshake, so they surface as a failed write or read rather than a connector error.
        return TransportError(f"TLS failure talking to Baidu: {exc.__cause__}"), Disposition.FINAL
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.UploadAbortedError):
        # ServerDisconnectedError, ClientOSError and resets: a stale keep-alive connection looks
        # exactly like this, and the request may or may not have been read.
        return TransportError(f"connection to Baidu lost ({name})"), Disposition.AMBIGUOUS
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return TransportError(f"the proxy refused the request ({exc.status})"), Disposition.FINAL
    if isinstance(exc, aiohttp.ClientResponseError):
        return ResponseError(f"Baidu's answer is not valid HTTP ({name})"), Disposition.FINAL
    if isinstance(exc, TimeoutError):
        # aiohttp's total timeout, which the client sets to the call's remaining deadline.
        return ExchangeTimeoutError("the exchange's deadline passed"), Disposition.FINAL
    return TransportError(f"request to Baidu failed ({name})"), Disposition.FINAL


class RedactedCause(Exception):
    """Stands in for an exception from the network layer whose text quoted a secret or a code.

    It keeps the original's type name and its text with those blanked; the original, and the
    objects it held, are dropped.
    """


def detach_cause(exc: BaseException, redact: Redactor) -> BaseException:
    """``exc`` made safe to keep as the ``__cause__`` of the error a call raises.

    Its frames, and those of every exception chained to it, are dropped: they are aiohttp's and
    asyncio's, and hold the request (asyncio's ``write()`` has the body, secret and all, as a
    local), which error trackers record. An ``aiohttp.ClientResponseError`` is rebuilt: its
    message quotes the bytes the server sent (any echo of the request, in escapes no blanking
    can foresee) and its ``request_info`` holds the request's headers (a proxy's
    ``Proxy-Authorization`` among them), so only the message's first clause and the status stay.
    When the text of anything else chained quotes a hidden value or a URL's credentials, a
    ``RedactedCause`` takes the place of the whole chain.
    """
    strip_frames(exc)
    if isinstance(exc, aiohttp.ClientResponseError):
        return _rebuilt_response_error(exc, redact)
    if not any(_reveals(redact, _text_of(link)) for link in _chain(exc)):
        return exc
    return RedactedCause(f"{type(exc).__name__}: {_blank(redact, _safe_str(exc))}")


def strip_frames(exc: BaseException) -> None:
    """Drop the traceback of ``exc`` and of everything chained to it."""
    for link in _chain(exc):
        link.__traceback__ = None


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is seen for seen in chain):
            continue
        chain.append(current)
        pending += [current.__cause__, current.__context__]
    return chain


#: ``scheme://user:password@``, as aiohttp shows a proxy's URL, and an HTTP Basic token.
_CREDENTIALS_IN_TEXT = re.compile(r"(?<=://)[^/@\s'\"]*@|(?<=Basic )[A-Za-z0-9+/=]+")


def _reveals(redact: Redactor, text: str) -> bool:
    return redact.reveals(text) or _CREDENTIALS_IN_TEXT.search(text) is not None


def _blank(redact: Redactor, text: str) -> str:
    return _CREDENTIALS_IN_TEXT.sub("***", redact(text))


def _rebuilt_response_error(exc: aiohttp.ClientResponseError, redact: Redactor) -> BaseException:
    first_clause = _blank(redact, re.split(r"[:\n]", exc.message or "", maxsplit=1)[0][:80])
    info = exc.request_info
    try:
        url = info.url.with_user(None).with_query(None).with_fragment(None)
        bare_info = aiohttp.RequestInfo(url, info.method, CIMultiDictProxy(CIMultiDict()), url)
        rebuilt = type(exc)(bare_info, (), status=exc.status, message=first_clause)
        if not _reveals(redact, _text_of(rebuilt)):
            return rebuilt
    except Exception:  # noqa: S110 (a subclass with another constructor: the stand-in below)
        pass
    return RedactedCause(f"{type(exc).__name__}: {exc.status}, {first_clause}")


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        return "(its text could not be read)"


def _text_of(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None)
    try:
        shown = repr(exc)
    except Exception:
        shown = ""
    return f"{_safe_str(exc)}\n{shown}\n{notes!r}"
