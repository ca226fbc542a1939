"""The wire format of the exchange: the form body out, Baidu's answer in.

Kept apart from the client so the parsing can be tested (and fuzzed) without a network, and so the
client module only deals with sessions, retries and concurrency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import quote, quote_plus, urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ._errors import ResponseError, ServiceUnavailableError, error_from_payload
from ._models import SessionKey
from ._retry import Disposition, disposition_of_status, parse_retry_after

# Internal to the package: nothing here is public.
__all__: list[str] = []

T = TypeVar("T")

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


def wire_forms(value: str) -> frozenset[str]:
    """``value`` as it is and as it travels percent-encoded: in a form body (``quote_plus``) and in
    a URL (``quote``, with and without ``/`` kept). A server that echoes a request may use any."""
    return frozenset({value, quote_plus(value), quote(value, safe=""), quote(value)})


class Redactor:
    """Blanks every wire form of some hidden values out of a text.

    Longer forms go first, so a value is never half-blanked by a shorter one inside it.
    """

    __slots__ = ("_forms",)

    def __init__(self, forms: Iterable[str]) -> None:
        self._forms = sorted({form for form in forms if form}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def reveals(self, text: str) -> bool:
        """Whether ``text`` holds any of the hidden values, in any of their forms."""
        return any(form in text for form in self._forms)

    def __repr__(self) -> str:
        return "<Redactor>"


#: A shorter code is not blanked: "***" for every "abc" would mangle Baidu's own error strings,
#: and a code that short is no secret worth guarding.
SHORTEST_BLANKED_CODE = 8


class Credentials:
    """The AppKey and AppSecret, with the constant part of every request body encoded once.

    Its ``repr`` is redacted: error trackers record the repr of every local variable of a failed
    call's frames, and this object (and the bytes it holds) must never show up there.
    """

    __slots__ = ("_hidden", "client_id", "form_prefix", "secret")

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id = client_id
        self.secret = secret
        self.form_prefix = (urlencode({"client_id": client_id, "sk": secret}) + "&code=").encode()
        self._hidden = wire_forms(secret)

    def hide_also(self, forms: Iterable[str]) -> None:
        """Blank these too, wherever the secret is blanked (a proxy's password, for one)."""
        self._hidden = self._hidden | frozenset(forms)

    def form_body(self, code: str) -> bytes:
        """The whole urlencoded body for one code; the code travels byte for byte."""
        return self.form_prefix + quote_plus(code).encode("ascii")

    def redactor(self, code: str | None = None) -> Redactor:
        """Blanks the secret (and whatever ``hide_also`` added) and, when it is long enough to
        blank safely, ``code``, in every wire form."""
        if code is not None and len(code) >= SHORTEST_BLANKED_CODE:
            return Redactor(self._hidden | wire_forms(code))
        return Redactor(self._hidden)

    def redact(self, text: str, code: str) -> str:
        """``text`` with the secret and the code blanked out, should Baidu echo them."""
        return self.redactor(code)(text)

    def __repr__(self) -> str:
        return "<Credentials redacted>"


class Hidden(Generic[T]):
    """Holds a setting that may carry a credential (a proxy URL with a password) behind a
    redacted ``repr``, for the same reason as ``Credentials``."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


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


#: Baidu's own error strings: a code is never blanked out of these (a code "grant" must not turn
#: "invalid_grant" into "invalid_***", which no longer reads as a spent code).
_KNOWN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "redirect_uri_mismatch",
        "unsupported_response_type",
        "expired_token",
        "slow_down",
    }
)


def _redacted(payload: dict[str, Any], credentials: Credentials, code: str) -> dict[str, Any]:
    everything = credentials.redactor(code)
    secret_only = credentials.redactor()
    redacted: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, str):
            blank = secret_only if key == "error" and value in _KNOWN_ERRORS else everything
            redacted[key] = blank(value)
        elif isinstance(value, int | float) and everything.reveals(str(value)):
            # A digit-only code or secret echoed as a JSON number becomes an errno or an error
            # string in str() form: blank it like the text it stands for.
            redacted[key] = "***"
        else:
            redacted[key] = value
    return redacted


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
