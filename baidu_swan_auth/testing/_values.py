"""The fake's constants and the values it hands out: grants and recorded requests."""

from __future__ import annotations

import attrs

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SECRET",
    "ENDPOINT_PATH",
    "GETSESSIONKEY_PATH",
    "GETUNIONID_PATH",
    "REDIRECT_TARGET_PATH",
    "TOKEN_PATH",
    "V2_INVALID_CODE_ERRNO",
    "Grant",
    "RecordedRequest",
    "UnknownCodeError",
]

DEFAULT_CLIENT_ID = "fake-client-id"
"""The AppKey the fake accepts unless told otherwise."""

DEFAULT_SECRET = "fake-secret-0123456789abcdef"  # noqa: S105 - a well-known fake, never real
"""The AppSecret the fake accepts unless told otherwise. Obviously not a real secret."""

ENDPOINT_PATH = "/oauth/jscode2sessionkey"
"""The path of the exchange endpoint, the same as on ``spapi.baidu.com``."""

TOKEN_PATH = "/oauth/2.0/token"  # noqa: S105 - a URL path, not a secret
"""The path of the access-token API, the same as on ``openapi.baidu.com``."""

GETSESSIONKEY_PATH = "/rest/2.0/smartapp/getsessionkey"
"""The path of the v2 session-key API (access token and code), as on ``openapi.baidu.com``."""

GETUNIONID_PATH = "/rest/2.0/smartapp/getunionid"
"""The path of the unionid API (access token and openid), as on ``openapi.baidu.com``."""

# The paths faults may apply to: the four APIs, not the redirect target nor unknown paths.
API_PATHS = (ENDPOINT_PATH, TOKEN_PATH, GETSESSIONKEY_PATH, GETUNIONID_PATH)

V2_INVALID_CODE_ERRNO = 40001
"""The ``errno`` the fake's v2 session-key API answers for an unknown or spent code.

The fake's own choice: Baidu's list of business ``errno`` values is not public, so a client
should keep the number without giving it a meaning; tests may compare with this constant.
"""

REDIRECT_TARGET_PATH = "/elsewhere"
"""Where a [`Redirect`][baidu_swan_auth.testing.Redirect] points by default.

It answers like the endpoint, so a client that follows the redirect "succeeds"; its requests
are recorded with this path so that a test can prove nothing reached it. For the access-token
APIs the redirect points to this path followed by the API's path (e.g.
``/elsewhere/oauth/2.0/token``), which answers like that API.
"""


class UnknownCodeError(LookupError):
    """Raised when asking the fake about a code it never issued."""


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
