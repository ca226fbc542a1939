"""The wire format of the exchange: the form body out, Baidu's answer in.

Kept apart from the client so the parsing can be tested (and fuzzed) without a network, and so the
client module only deals with sessions, retries and concurrency.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
from multidict import CIMultiDictProxy

from ._errors import ResponseError, ServiceUnavailableError, error_from_payload
from ._models import SessionKey
from ._retry import Disposition, disposition_of_status, parse_retry_after

__all__ = [
    "FORM_CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "AttemptFailure",
    "Credentials",
    "interpret_answer",
    "read_capped_body",
]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Baidu's answers are about a hundred bytes; a gateway's error page may be a few KiB. Anything
#: larger is refused unread rather than buffered.
MAX_BODY_BYTES = 16 * 1024


class AttemptFailure(Exception):
    """One failed attempt: the error the call would raise, and whether retrying may help."""

    def __init__(
        self,
        error: Exception,
        disposition: Disposition,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.disposition = disposition
        self.status = status
        self.retry_after = retry_after


class Credentials:
    """The AppKey and AppSecret, with the constant part of every request body encoded once.

    Its ``repr`` is redacted: error trackers record the repr of every local variable of a failed
    call's frames, and this object (and the bytes it holds) must never show up there.
    """

    __slots__ = ("client_id", "form_prefix", "secret")

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id = client_id
        self.secret = secret
        self.form_prefix = (urlencode({"client_id": client_id, "sk": secret}) + "&code=").encode()

    def form_body(self, code: str) -> bytes:
        """The whole urlencoded body for one code; the code travels byte for byte."""
        return self.form_prefix + quote_plus(code).encode("ascii")

    def redact(self, text: str, code: str) -> str:
        """``text`` with the secret and the code blanked out, should Baidu echo them."""
        for hidden in (self.secret, code):
            if hidden and hidden in text:
                text = text.replace(hidden, "***")
        return text

    def __repr__(self) -> str:
        return "<Credentials redacted>"


def read_capped_body(response: aiohttp.ClientResponse) -> Awaitable[bytes | None]:
    """The body, or None when it is over ``MAX_BODY_BYTES`` (then it is not buffered).

    A plain function returning the awaitable, rather than a coroutine, so the usual answer costs
    no extra frame on the hot path.
    """
    length = response.content_length
    if length is not None:
        if length > MAX_BODY_BYTES:
            return _nothing()
        # Content-Length counts the bytes on the wire; a compressed body may expand far beyond
        # them, so only an uncompressed one is read whole.
        if "Content-Encoding" not in response.headers:
            return response.read()
    return _read_streamed(response)


async def _nothing() -> None:
    return None


async def _read_streamed(response: aiohttp.ClientResponse) -> bytes | None:
    stream = response.content
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(MAX_BODY_BYTES + 1 - size):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    if body is None:
        return None
    try:
        # Decoding first spares json.loads its encoding detection; Baidu answers in UTF-8.
        value = json.loads(body.decode())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def interpret_answer(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    credentials: Credentials,
    code: str,
) -> SessionKey:
    """Turn one answer into a ``SessionKey``, or raise ``AttemptFailure`` saying what went wrong.

    ``body`` is None when the answer was too large to read.
    """
    if status == 200:
        payload = _json_object(body)
        if payload is not None and (
            # One rule decides success and failure: benign fields ("errno": 0, "error": null)
            # must not turn a spent code's good answer into an error.
            ("error" not in payload and "errno" not in payload and "error_code" not in payload)
            or error_from_payload(payload, status) is None
        ):
            key = _session_key(payload)
            if key is not None:
                return key
    raise _failure(status, headers, body, credentials, code)


def _session_key(payload: dict[str, Any]) -> SessionKey | None:
    openid = payload.get("openid")
    session_key = payload.get("session_key")
    if type(openid) is str and type(session_key) is str and openid and session_key:
        return SessionKey(openid, session_key)
    return None


def _redacted(payload: dict[str, Any], credentials: Credentials, code: str) -> dict[str, Any]:
    return {
        key: credentials.redact(value, code) if isinstance(value, str) else value
        for key, value in payload.items()
    }


def _failure(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    credentials: Credentials,
    code: str,
) -> AttemptFailure:
    payload = _json_object(body)
    if payload is not None:
        payload = _redacted(payload, credentials, code)
    if 300 <= status < 400:
        error = ResponseError(
            f"Baidu answered with a redirect (HTTP {status}); redirects are never followed "
            "because the request carries the AppSecret",
            status=status,
        )
        return AttemptFailure(error, Disposition.FINAL, status=status)
    if status == 429 or status >= 500:
        # Judged by the status whatever the body says: gateways put JSON error bodies on them too.
        signalled = error_from_payload(payload, status) if payload is not None else None
        return _unavailable(status, headers, signalled, disposition_of_status(status))
    if body is None:
        error = ResponseError(
            f"Baidu's answer (HTTP {status}) is larger than {MAX_BODY_BYTES} bytes; not read",
            status=status,
        )
        return AttemptFailure(error, Disposition.FINAL, status=status)
    if payload is None:
        error = ResponseError(f"Baidu's answer (HTTP {status}) is not a JSON object", status=status)
        return AttemptFailure(error, Disposition.FINAL, status=status)
    signalled = error_from_payload(payload, status)
    if signalled is not None:
        if signalled.error == "slow_down":
            return _unavailable(status, headers, signalled, Disposition.SAFE)
        return AttemptFailure(signalled, Disposition.FINAL, status=status)
    if status != 200:
        error = ResponseError(f"Baidu answered HTTP {status} without an error body", status=status)
    else:
        error = ResponseError(
            "Baidu's answer lacks a non-empty openid or session_key", status=status
        )
    return AttemptFailure(error, Disposition.FINAL, status=status)


def _unavailable(
    status: int,
    headers: CIMultiDictProxy[str],
    signalled: Exception | None,
    disposition: Disposition,
) -> AttemptFailure:
    retry_after = parse_retry_after(headers.get("Retry-After"))
    error_string = getattr(signalled, "error", None)
    description = getattr(signalled, "description", None)
    message = f"Baidu is unavailable (HTTP {status})"
    if error_string:
        message += f": {error_string}"
    error = ServiceUnavailableError(
        message,
        error=error_string,
        description=description,
        status=status,
        retry_after=retry_after,
    )
    return AttemptFailure(error, disposition, status=status, retry_after=retry_after)
