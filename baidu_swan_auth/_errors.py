"""Every exception the SDK raises (``_answers`` maps Baidu's answers onto them).

The tree, so a reader sees it before any class::

    SwanAuthError
    ├── InvalidInputError (also ValueError)   bad code, before any request
    ├── ConfigurationError (also ValueError)  bad settings, missing environment variables
    ├── UsageError (also RuntimeError)        client used from the wrong event loop, ...
    ├── ApiError                              Baidu answered with an error body
    │   ├── InvalidCodeError                  invalid_grant: code invalid, expired or used
    │   │   └── CodeConsumedError             invalid_grant after an attempt that may have spent it
    │   ├── InvalidClientError                invalid_client, unauthorized_client
    │   └── TokenRejectedError                the gateway refused the access token (110, 111)
    ├── ServiceUnavailableError               429, 5xx or slow_down, still failing at the end
    ├── TransportError                        the network failed, still failing at the end
    │   └── ExchangeTimeoutError (also TimeoutError)
    ├── ClientClosedError                     the client was closed
    ├── ResponseError                         an answer not of the documented shape
    ├── DecryptError                          user data that does not decrypt: a stale key, ...
    └── MissingDependencyError (also ImportError)
                                              an optional extra (crypto) is not installed

Every exception carries ``error`` (Baidu's error string or None), ``description``, ``status``
(the HTTP status or None) and ``attempts`` (how many requests the call made). Messages never contain
the AppSecret, a session key, decrypted user data or a whole login code.
"""

# No `from __future__ import annotations` here: these classes report `baidu_swan_auth` as their
# module (see __init__.py), and typing.get_type_hints() evaluates string annotations in the
# namespace of that module, which has no `ClassVar`. Evaluated when the class is built, the
# annotations are objects that need no namespace. tests/test_public_face.py checks it.
from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "ClientClosedError",
    "CodeConsumedError",
    "ConfigurationError",
    "DecryptError",
    "ExchangeTimeoutError",
    "InvalidClientError",
    "InvalidCodeError",
    "InvalidInputError",
    "MissingDependencyError",
    "ResponseError",
    "ServiceUnavailableError",
    "SwanAuthError",
    "TokenRejectedError",
    "TransportError",
    "UsageError",
]


class SwanAuthError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        error: Baidu's error string (``invalid_grant``, ...), or None when Baidu sent none.
        description: A human-readable explanation: Baidu's ``error_description`` when it sent one.
        status: The HTTP status of the last answer, or None when there was no answer.
        attempts: How many HTTP requests the call made before giving up (0: none was sent).
        kind: A short stable name for the failure class, for metrics and bulk output records.
        code_may_be_spent: Whether an attempt of the call may have reached Baidu and spent the
            single-use code (a timeout or a dropped connection after the request went out),
            so that sending it again may find it used.
    """

    kind: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.description = description
        self.status = status
        self.attempts = attempts
        self.code_may_be_spent = False

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        fields = [repr(self.message)]
        for name in ("error", "status", "attempts"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields do not survive the default Exception pickling; bulk jobs that hand
        # outcomes between processes need them to.
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[SwanAuthError], message: str, state: dict[str, Any]) -> SwanAuthError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidInputError(SwanAuthError, ValueError):
    """The input is unusable: an empty, over-long or control-character code (nothing was sent),
    a non-str argument to [`swanid_signature`][baidu_swan_auth.swanid_signature], ..."""

    kind = "invalid_input"


class ConfigurationError(SwanAuthError, ValueError):
    """The client's settings are unusable: an insecure endpoint, a missing environment variable."""

    kind = "configuration"


class UsageError(SwanAuthError, RuntimeError):
    """The client was used in a way that cannot work, such as from a second event loop."""

    kind = "usage"


class ApiError(SwanAuthError):
    """Baidu answered with an error body, whatever the HTTP status (200 included).

    Attributes:
        errno: The numeric ``errno`` / ``error_code`` when Baidu sent one, else None. Without
            an ``error`` string beside it, ``error`` holds the same number as a string.
    """

    kind = "api_error"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status: int | None = None,
        attempts: int = 0,
        errno: int | None = None,
    ) -> None:
        super().__init__(
            message, error=error, description=description, status=status, attempts=attempts
        )
        self.errno = errno


class InvalidCodeError(ApiError):
    """``invalid_grant``: the code is invalid, expired, or was already used."""

    kind = "invalid_code"


class CodeConsumedError(InvalidCodeError):
    """``invalid_grant`` on a retry, after an earlier attempt of the call may have reached Baidu.

    That earlier attempt (a timeout or a dropped connection after the request went out) most likely
    spent the single-use code, so the user must log in again to get a new one.
    """

    kind = "code_consumed"


class InvalidClientError(ApiError):
    """``invalid_client`` or ``unauthorized_client``: check the AppKey and AppSecret."""

    kind = "invalid_client"


class TokenRejectedError(ApiError):
    """Baidu's OpenAPI gateway refused the access token: ``errno`` is its ``error_code``, 110 (the
    token is invalid or was revoked) or 111 (it expired).

    The client renews the token and tries once more by itself; this is raised only when the fresh
    token is refused too. The gateway refused the request before the code reached the service, so
    the code was not spent by that attempt.
    """

    kind = "token_rejected"


class ServiceUnavailableError(SwanAuthError):
    """Baidu was overloaded or broken (429, 5xx, ``slow_down``) and retries did not help.

    Attributes:
        retry_after: The delay in seconds Baidu asked for in its last ``Retry-After``, if any.
    """

    kind = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status: int | None = None,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, error=error, description=description, status=status, attempts=attempts
        )
        self.retry_after = retry_after


class TransportError(SwanAuthError):
    """The connection failed (refused, reset, TLS, DNS) and retries did not help."""

    kind = "transport"


class ExchangeTimeoutError(TransportError, TimeoutError):
    """The call's deadline passed, or its last attempt timed out."""

    kind = "timeout"


class ClientClosedError(SwanAuthError):
    """The client was closed before or during the call."""

    kind = "closed"


class ResponseError(SwanAuthError):
    """Baidu's answer was not of the documented shape: not JSON, a redirect, too large, ..."""

    kind = "response"


class DecryptError(SwanAuthError):
    """User data did not decrypt with the session key, or an argument to decryption is unusable.

    Raised by [`decrypt_user_data`][baidu_swan_auth.decrypt_user_data] and
    [`SessionKey.decrypt`][baidu_swan_auth.SessionKey.decrypt] for every bad input: they never
    return garbage. The message never contains the session key or the decrypted data.

    Attributes:
        reason: What was wrong, a stable string: ``"argument"`` (not a str, an empty AppKey),
            ``"base64"``, ``"key_size"``, ``"iv_size"``, ``"data_size"``, ``"padding"``,
            ``"length"`` (the length field does not fit), ``"app_key"`` (the data decrypted to
            valid JSON but ends with another AppKey: ``app_key`` is not the AppKey of the mini
            program that received it) or ``"json"`` (the payload is not a JSON object).
        stale_key: True for ``"padding"`` and ``"length"``: the data does not decrypt to
            Baidu's layout under this key, which almost always means the session key is stale
            (a newer ``swan.login()`` renewed it). Have the mini program log in again.
    """

    kind = "decrypt"
    _STALE_REASONS: ClassVar[frozenset[str]] = frozenset({"padding", "length"})

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.stale_key = reason in self._STALE_REASONS

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class MissingDependencyError(SwanAuthError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run.

    Attributes:
        package: The missing distribution, e.g. ``"cryptography"`` for the ``crypto`` extra.
    """

    kind = "missing_dependency"

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


