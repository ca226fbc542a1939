"""Baidu's OpenAPI on the wire: the paths, the token's answer, and the two error layers of
``rest/2.0`` (the gateway's ``error_code``, the service's ``errno``).

The gateway checks the access token before the service sees the request: its 110 (invalid or
revoked) and 111 (expired) mean the request went no further, so a code it carried is not spent
and a fresh token may succeed. Everything else an answer can say is read as on the v1 endpoint.
"""

from __future__ import annotations

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

_SHORTEST_LIFETIME = 1
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
            if type(token) is str and is_token_text(token) and lifetime is not None:
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


def is_token_text(token: str) -> bool:
    """Whether ``token`` has the shape of Baidu's tokens (and can travel in a form body)."""
    return _TOKEN_SHAPE.fullmatch(token) is not None


def _lifetime(value: object) -> float | None:
    """``expires_in`` in seconds, or None for one that is not a number of seconds from 1 s to
    ten years (a token that expires on arrival is no token)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        # A few digits at most: int() of thousands of digits is slow, and past ten years anyway.
        if not (value.isascii() and value.isdigit() and len(value) <= 12):
            return None
        value = int(value)
    if isinstance(value, int | float) and _SHORTEST_LIFETIME <= value <= _LONGEST_LIFETIME:
        return float(value)  # NaN fails the comparison; an int past a float fails the bound
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


def _gateway_code(value: object) -> int | None:
    """110 or 111 as Baidu's gateway may send it (a number, a digit string, 110.0), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value in TOKEN_REJECTIONS else None


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
    rejection = _gateway_code(payload.get("error_code"))
    if rejection is not None:
        message = payload.get("error_msg")
        # Blanked whole, then cut: a secret cut in two would no longer be found and blanked.
        description = blanks()[0](message)[:300] if isinstance(message, str) else None
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
