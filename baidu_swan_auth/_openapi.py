"""Baidu's OpenAPI on the wire: the paths, the token's answer, and the two error layers of
``rest/2.0`` (the gateway's ``error_code``, the service's ``errno``).

The gateway checks the access token before the service sees the request: its 110 (invalid or
revoked) and 111 (expired) mean the request went no further, so a code it carried is not spent
and a fresh token may succeed. Everything else an answer can say is read as on the v1 endpoint.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from multidict import CIMultiDictProxy

from ._answers import error_from_payload, failure_of, json_object
from ._errors import TokenRejectedError
from ._models import AccessToken, SessionKey
from ._protocol import AttemptFailure, Redactor
from ._retry import Disposition

__all__: list[str] = []

TOKEN_PATH = "/oauth/2.0/token"  # noqa: S105 - a path, not a secret
GETSESSIONKEY_PATH = "/rest/2.0/smartapp/getsessionkey"
GETUNIONID_PATH = "/rest/2.0/smartapp/getunionid"

#: The gateway's answers about the token itself.
TOKEN_REJECTIONS = {110: "invalid or revoked", 111: "expired"}

#: A lifetime beyond ten years is no lifetime Baidu gives; it would only postpone renewal forever.
_LONGEST_LIFETIME = 10 * 365 * 86400
#: Baidu's tokens look like "24.<hex>.2592000.<time>.<n>-<app id>": printable ASCII, no spaces.
_TOKEN_SHAPE = re.compile(r"[\x21-\x7e]{1,1024}")


def read_token(
    status: int, headers: CIMultiDictProxy[str], body: bytes | None, secret_only: Redactor
) -> AccessToken:
    """The ``AccessToken`` in a token answer, or ``AttemptFailure``.

    Only ``access_token`` and ``expires_in`` are read: the legacy ``refresh_token``,
    ``session_key`` and ``session_secret`` beside them are never kept.
    """
    now = time.time()
    if status == 200:
        payload = json_object(body)
        if payload is not None and error_from_payload(payload, status, "token fetch") is None:
            token = payload.get("access_token")
            lifetime = _lifetime(payload.get("expires_in"))
            if type(token) is str and _TOKEN_SHAPE.fullmatch(token) and lifetime is not None:
                return AccessToken(token, now + lifetime, now)
    raise failure_of(
        status,
        headers,
        body,
        secret_only,
        secret_only,
        "Baidu's token answer lacks a usable access_token or expires_in",
        "token fetch",
    )


def _lifetime(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= _LONGEST_LIFETIME:
        return float(value)
    return None


def read_session_key(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    blanks: Callable[[], tuple[Redactor, Redactor]],
) -> SessionKey:
    """The ``SessionKey`` in a v2 ``getsessionkey`` answer, or ``AttemptFailure``."""
    data = _data(status, body, blanks, "exchange")
    if data is not None:
        openid = data.get("open_id", data.get("openid"))
        session_key = data.get("session_key")
        if type(openid) is str and type(session_key) is str and openid and session_key:
            return SessionKey(openid, session_key)
    raise failure_of(
        status, headers, body, *blanks(), "Baidu's answer lacks a non-empty open_id or session_key"
    )


def read_unionid(
    status: int,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    blanks: Callable[[], tuple[Redactor, Redactor]],
) -> str:
    """The unionid in a ``getunionid`` answer, or ``AttemptFailure``."""
    data = _data(status, body, blanks, "unionid lookup")
    if data is not None:
        unionid = data.get("unionid")
        if type(unionid) is str and unionid:
            return unionid
    lacking = "Baidu's answer lacks a non-empty unionid"
    raise failure_of(status, headers, body, *blanks(), lacking, "unionid lookup")


def _data(
    status: int, body: bytes | None, blanks: Callable[[], tuple[Redactor, Redactor]], call: str
) -> dict[str, Any] | None:
    """A successful answer's ``data``; None for any other answer (``failure_of`` reads it),
    after raising ``AttemptFailure`` for a gateway's refusal of the token."""
    if status >= 500 or status == 429 or 300 <= status < 400:
        return None
    payload = json_object(body)
    if payload is None:
        return None
    rejection = payload.get("error_code")
    if type(rejection) is int and rejection in TOKEN_REJECTIONS:
        message = payload.get("error_msg")
        description = blanks()[0](message[:300]) if isinstance(message, str) else None
        error = TokenRejectedError(
            f"Baidu refused the access token of the {call}: error_code {rejection} "
            f"({TOKEN_REJECTIONS[rejection]})",
            error=str(rejection),
            description=description,
            status=status,
            errno=rejection,
        )
        raise AttemptFailure(error, Disposition.FINAL, status=status, stale_token=True)
    data = payload.get("data")
    if status == 200 and isinstance(data, dict) and error_from_payload(payload, status) is None:
        return data
    return None
