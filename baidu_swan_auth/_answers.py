"""Baidu's answers, read: a JSON body into a result or the error it signals, and a
``Retry-After`` into seconds, with whatever the request sent blanked out of the text kept."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from multidict import CIMultiDictProxy

from ._errors import (
    ApiError,
    InvalidClientError,
    InvalidCodeError,
    ResponseError,
    ServiceUnavailableError,
    SwanAuthError,
)
from ._models import SessionKey
from ._protocol import MAX_BODY_BYTES, AttemptFailure, Credentials, Redactor
from ._retry import Disposition, disposition_of_status

__all__: list[str] = []


#: Delay-seconds are ASCII digits (RFC 9110); a decimal part is tolerated because real servers
#: send one. ``float()`` alone would also take "1e3", "infinity", "1_0" and Arabic-Indic digits.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

#: Longer waits are all the same to the client (far past ``max_retry_after``); the bound keeps
#: the value finite for whoever reads ``ServiceUnavailableError.retry_after``.
LONGEST_RETRY_AFTER = float(2**31)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None.

    Never raises: an unreadable value is None, an absurd one is capped at
    ``LONGEST_RETRY_AFTER`` (a date in the past is 0).
    """
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return min(float(value), LONGEST_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
    except (TypeError, ValueError, IndexError, OverflowError):
        # A year past 9999 or an offset past a day: hostile or broken, never worth a crash.
        return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), LONGEST_RETRY_AFTER)


_ERROR_CLASSES: dict[str, type[ApiError]] = {
    "invalid_grant": InvalidCodeError,
    "invalid_client": InvalidClientError,
    "unauthorized_client": InvalidClientError,
}
_ERRNO_KEYS = ("errno", "error_code")
_MESSAGE_KEYS = ("errmsg", "error_msg", "msg")
_MAX_TEXT = 300
# ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
_ERRNO_TEXT = re.compile(r"-?[0-9]{1,18}")


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value[:_MAX_TEXT]
    return None


def _errno(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _ERRNO_TEXT.fullmatch(value):
        return int(value)
    return None


def error_from_payload(
    payload: dict[str, Any], status: int | None, call: str = "exchange"
) -> SwanAuthError | None:
    """The error a JSON object from Baidu signals, or None when it signals none.

    ``{"error": ..., "error_description": ...}`` is OAuth's shape; a non-zero numeric ``errno`` or
    ``error_code`` with ``errmsg`` / ``error_msg`` / ``msg`` is the shape of Baidu's other APIs.
    An empty or zero ``error`` (``null``, ``""``, ``0``, ``false``) signals none; one of another
    type than a string or a number is a malformed answer, not an error string.
    """
    raw_error = payload.get("error")
    if raw_error:
        if isinstance(raw_error, bool) or not isinstance(raw_error, str | int):
            return ResponseError("Baidu's answer has an ill-typed 'error' field", status=status)
        error = str(raw_error)[:_MAX_TEXT]
        description = _text(payload.get("error_description"))
        cls = _ERROR_CLASSES.get(error, ApiError)
        message = f"Baidu refused the {call}: {error}"
        if description:
            message += f" ({description})"
        # Baidu's gateway sends both shapes at once ({"errno": 10010100, "error": "parameter is
        # invalid", ...}): the string decides the class, the number is kept.
        errno = next((number for key in _ERRNO_KEYS if (number := _errno(payload.get(key)))), None)
        return cls(message, error=error, description=description, status=status, errno=errno)
    for key in _ERRNO_KEYS:
        errno = _errno(payload.get(key))
        if errno:
            description = next(
                (text for k in _MESSAGE_KEYS if (text := _text(payload.get(k))) is not None), None
            )
            message = f"Baidu refused the {call}: {key} {errno}"
            if description:
                message += f" ({description})"
            return ApiError(
                message, error=str(errno), description=description, status=status, errno=errno
            )
    return None


def json_object(body: bytes | None) -> dict[str, Any] | None:
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
        payload = json_object(body)
        if payload is not None and (
            # One rule decides success and failure: benign fields ("errno": 0, "error": null)
            # must not turn a spent code's good answer into an error.
            ("error" not in payload and "errno" not in payload and "error_code" not in payload)
            or error_from_payload(payload, status) is None
        ):
            key = _session_key(payload)
            if key is not None:
                return key
    raise failure_of(
        status,
        headers,
        body,
        credentials.redactor(code),
        credentials.redactor(),
        "Baidu's answer lacks a non-empty openid or session_key",
    )


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


def _redacted(
    payload: dict[str, Any], everything: Redactor, secret_only: Redactor
) -> dict[str, Any]:
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


def failure_of(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    everything: Redactor,
    secret_only: Redactor,
    lacking: str,
    call: str = "exchange",
) -> AttemptFailure:
    """What an answer that is not a result signals: ``everything`` blanks what the request sent
    (the secret, the code, a token), ``secret_only`` what may be blanked in Baidu's own error
    strings; ``lacking`` says what a 200 without an error lacked."""
    payload = json_object(body)
    if payload is not None:
        payload = _redacted(payload, everything, secret_only)
    if 300 <= status < 400:
        error = ResponseError(
            f"Baidu answered with a redirect (HTTP {status}); redirects are never followed "
            "because the request carries the AppSecret",
            status=status,
        )
        return AttemptFailure(error, Disposition.FINAL, status=status)
    if status == 429 or status >= 500:
        # Judged by the status whatever the body says: gateways put JSON error bodies on them too.
        signalled = error_from_payload(payload, status, call) if payload is not None else None
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
    signalled = error_from_payload(payload, status, call)
    if signalled is not None:
        if signalled.error == "slow_down":
            return _unavailable(status, headers, signalled, Disposition.SAFE)
        return AttemptFailure(signalled, Disposition.FINAL, status=status)
    if status != 200:
        error = ResponseError(f"Baidu answered HTTP {status} without an error body", status=status)
    else:
        error = ResponseError(lacking, status=status)
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
