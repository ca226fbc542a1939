"""Where codes are exchanged: the endpoint, the legacy one it replaces, and what is acceptable.

Kept apart from the client and the legacy shim because both need it: the client rewrites a legacy
endpoint given as configuration, and the shim rewrites legacy requests in flight.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
import warnings

import yarl

from ._errors import ConfigurationError

__all__ = ["DEFAULT_ENDPOINT", "LEGACY_ENDPOINT"]

DEFAULT_ENDPOINT = "https://spapi.baidu.com/oauth/jscode2sessionkey"
DEFAULT_OPENAPI_URL = "https://openapi.baidu.com"
LEGACY_ENDPOINT = "https://openapi.baidu.com/nalogin/getSessionKeyByCode"

_LEGACY_HOST = "openapi.baidu.com"
_LEGACY_PATHS = frozenset({"/nalogin/getSessionKeyByCode", "/nalogin/getSessionKeyByCode/"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

logger = logging.getLogger("baidu_swan_auth")


def is_legacy_url(url: yarl.URL) -> bool:
    """Whether ``url`` is the legacy ``getSessionKeyByCode`` URL (http or https, host in any
    case, default port, optional trailing slash, any query)."""
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS or url.raw_path not in _LEGACY_PATHS:
        return False
    try:
        host = url.host
    except UnicodeError:  # an IDNA host that does not decode is no legacy host either
        return False
    if host is None or host.rstrip(".").lower() != _LEGACY_HOST:
        return False
    return url.explicit_port is None or url.explicit_port == _DEFAULT_PORTS[scheme]


class _OncePerProcess:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = False

    def claim(self) -> bool:
        with self._lock:
            if self.done:
                return False
            self.done = True
            return True


_legacy_warning = _OncePerProcess()


def warn_legacy_once(
    old: yarl.URL, *, target: str | yarl.URL = DEFAULT_ENDPOINT, stacklevel: int | None = None
) -> None:
    """Warn, once per process, that the legacy endpoint is in use (never showing its query).

    The warning points at ``stacklevel`` frames up, or by default at the first caller outside
    this package, however many of its frames lie between (``from_env()`` adds one).
    """
    if not _legacy_warning.claim():
        return
    shown = old.with_query(None).with_fragment(None).with_user(None)
    message = (
        f"{shown} is deprecated and fails for mini programs running in partner apps; "
        f"requests are sent to {target} instead. Migrate to "
        "SwanAuthClient.exchange (see 'Migrating from getSessionKeyByCode' in the docs)."
    )
    logger.warning("legacy endpoint in use: %s", message)
    level = stacklevel + 1 if stacklevel is not None else _first_frame_outside_package()
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def _first_frame_outside_package() -> int:
    """The ``stacklevel`` of the nearest caller whose module is not this package's."""
    package = __name__.rpartition(".")[0]
    frame = sys._getframe(1)  # our caller: warn_legacy_once
    level = 1
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != package and not name.startswith(package + "."):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def check_endpoint(
    endpoint: str | yarl.URL,
    allow_insecure_http: bool,
    *,
    insecure_hint: str = "pass allow_insecure_http=True",
    name: str = "endpoint",
) -> yarl.URL:
    """The endpoint as a URL, or ``ConfigurationError`` when the secret would not be safe there.

    ``insecure_hint`` says how to allow plain http in the caller's terms (a flag, for the CLI).
    """
    try:
        url = yarl.URL(endpoint)
        host = url.host  # decoding an IDNA host can fail, and only here
    except (TypeError, ValueError) as exc:  # UnicodeError included
        raise ConfigurationError(f"{name} is not a URL: {exc}") from None
    if url.scheme not in ("https", "http") or not host:
        raise ConfigurationError(f"{name} must be an absolute https:// URL")
    if url.user or url.password:
        raise ConfigurationError(f"{name} must not carry credentials")
    if url.query_string:
        raise ConfigurationError(f"{name} must not carry a query string")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(host):
        raise ConfigurationError(
            f"refusing plain http:// to {host}"
            f"{'' if name == 'endpoint' else f' ({name})'}: the AppSecret would travel in clear "
            "text; "
            f"use https://, or {insecure_hint} if you really mean it"
        )
    return url


def openapi_url(base: str | yarl.URL, allow_insecure_http: bool, path: str) -> yarl.URL:
    """The URL of one OpenAPI call under ``base`` (``openapi_url``), checked like an endpoint."""
    url = check_endpoint(base, allow_insecure_http, name="openapi_url")
    if url.fragment:
        raise ConfigurationError("openapi_url must not carry a fragment")
    return url.with_path(url.path.rstrip("/") + path)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
