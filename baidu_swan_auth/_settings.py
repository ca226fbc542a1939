"""Checks of the client's settings and inputs, done once at construction (or at the call, for a
code), so that bad ones fail with ``ConfigurationError`` / ``InvalidInputError`` rather than later
with a raw ``TypeError`` or ``OverflowError``; and the proxy settings, whose password is blanked
wherever the AppSecret is."""

from __future__ import annotations

import base64
import contextlib
import inspect
import math
import os
import ssl as ssl_module
from collections.abc import Iterable
from typing import Any

import aiohttp
import yarl

from ._endpoints import DEFAULT_ENDPOINT, check_endpoint, is_legacy_url, warn_legacy_once
from ._errors import ConfigurationError, InvalidInputError
from ._protocol import Credentials, Hidden, wire_forms
from ._retry import RetryBudget

__all__: list[str] = []

MAX_CODE_BYTES = 1024

ENV_CLIENT_ID = "BAIDU_SWAN_CLIENT_ID"
ENV_SECRET = "BAIDU_SWAN_SECRET"  # noqa: S105 (a variable name, not a secret)
ENV_ENDPOINT = "BAIDU_SWAN_ENDPOINT"
ENV_API = "BAIDU_SWAN_API"
ENV_OPENAPI_URL = "BAIDU_SWAN_OPENAPI_URL"

#: The exchange APIs: v1 (the AppSecret in the body) and v2 (an access token in the body).
API_V1 = "jscode2sessionkey"
API_V2 = "getsessionkey"


def checked_api(api: object) -> str:
    if api not in (API_V1, API_V2):
        raise ConfigurationError(f"api must be {API_V1!r} or {API_V2!r}, not {api!r}")
    return str(api)


def configured_endpoint(endpoint: str | yarl.URL, allow_insecure_http: bool) -> yarl.URL:
    """The endpoint to use; an old configuration value naming the legacy URL gets the new one."""
    try:
        legacy = is_legacy_url(yarl.URL(endpoint))
    except (TypeError, ValueError):
        legacy = False  # check_endpoint says what is wrong with it
    if legacy:
        warn_legacy_once(yarl.URL(endpoint))
        endpoint = DEFAULT_ENDPOINT
    return check_endpoint(endpoint, allow_insecure_http)


def proxy_from_environment(url: yarl.URL) -> str | None:
    # aiohttp's trust_env looks the proxy up again, in a thread, on every request; the environment
    # is read once here instead. Imported here: urllib.request is slow to import, and needed once.
    import urllib.request  # noqa: PLC0415

    host = url.host or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(url.scheme)


def checked_proxy(proxy: str | yarl.URL | None) -> yarl.URL | None:
    if proxy is None:
        return None
    try:
        url = yarl.URL(proxy)
        host = url.host  # decoding an IDNA host can fail, and only here
    except (TypeError, ValueError):  # UnicodeError included
        # The message leaves the value out: it may hold the proxy's password.
        raise ConfigurationError("proxy is not a URL") from None
    if url.scheme not in ("http", "https") or not host:
        raise ConfigurationError("proxy must be an absolute http:// or https:// URL")
    try:
        auth = aiohttp.BasicAuth.from_url(url)
        if auth is not None:
            auth.encode()  # aiohttp sends it as Latin-1, and would fail at the first request
    except (ValueError, UnicodeError):
        raise ConfigurationError(
            "the proxy's user name and password must be Latin-1 text without a ':' in the name"
        ) from None
    return url


def proxy_credential_forms(proxy: str | yarl.URL) -> set[str]:
    """How a proxy's password can show up in a failure: as it is, percent-encoded, and inside the
    ``Proxy-Authorization: Basic`` token aiohttp sends."""
    url = yarl.URL(proxy)
    password = url.password
    if not password:
        return set()
    sent = aiohttp.BasicAuth.from_url(url)
    # The token as aiohttp sends it (Latin-1), and as a UTF-8 echo of it would read.
    tokens = {sent.encode().removeprefix("Basic ")} if sent is not None else set()
    tokens.add(base64.b64encode(f"{url.user or ''}:{password}".encode()).decode())
    return {*wire_forms(password), url.raw_password or password, *tokens}


def check_code(code: object, what: str = "login code") -> None:
    """Raise ``InvalidInputError`` for a code (or an openid) that cannot be one."""
    if not isinstance(code, str):
        raise InvalidInputError(f"the {what} must be a str, not {type(code).__name__}")
    if not code:
        raise InvalidInputError(f"the {what} is empty")
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"the {what} is not valid Unicode text") from None
    if size > MAX_CODE_BYTES:
        raise InvalidInputError(f"the {what} is {size} bytes long, over {MAX_CODE_BYTES}")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in code):
        raise InvalidInputError(f"the {what} contains control characters")


def positive_number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past any float: 10**400
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{name} must be finite")
    return seconds


def check_callables(**hooks: object) -> None:
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise ConfigurationError(f"{name} must be callable, not {type(hook).__name__}")


def check_credential(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in value):
        # A newline from a badly quoted .env file, most likely: it would be sent and refused.
        raise ConfigurationError(f"{name} contains control characters (a newline?)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{name} is not valid Unicode text (a lone surrogate)") from None


def checked_attempts(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_attempts must be an int of at least 1, not {value!r}")
    return value


def credentials_from_environment(settings: dict[str, Any]) -> tuple[str, str]:
    """The AppKey and AppSecret from the environment; ``BAIDU_SWAN_ENDPOINT``,
    ``BAIDU_SWAN_API`` and ``BAIDU_SWAN_OPENAPI_URL``, when set, go into ``settings`` unless it
    names that setting already."""
    missing = [name for name in (ENV_CLIENT_ID, ENV_SECRET) if not os.environ.get(name)]
    if missing:
        raise ConfigurationError(
            f"environment variable{'s' if len(missing) > 1 else ''} "
            f"{' and '.join(missing)} not set"
        )
    for setting, variable in (
        ("endpoint", ENV_ENDPOINT),
        ("api", ENV_API),
        ("openapi_url", ENV_OPENAPI_URL),
    ):
        value = os.environ.get(variable)
        if value:
            settings.setdefault(setting, value)
    return os.environ[ENV_CLIENT_ID], os.environ[ENV_SECRET]


def check_hooks(
    *, on_attempt: object, backoff: object, sleep: object, retry_budget: object
) -> None:
    if on_attempt is not None and inspect.iscoroutinefunction(on_attempt):
        raise ConfigurationError("on_attempt must be a plain callable, not a coroutine function")
    check_callables(on_attempt=on_attempt, backoff=backoff, sleep=sleep)
    if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
        raise ConfigurationError(
            f"retry_budget must be a RetryBudget, not {type(retry_budget).__name__}"
        )


class SessionSettings:
    """What the client's own aiohttp session is made with, checked once."""

    __slots__ = ("pool_size", "proxy", "ssl", "trace_configs", "trust_env")

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None,
        pool_size: int,
        proxy: str | yarl.URL | None,
        trust_env: bool,
        ssl: ssl_module.SSLContext | bool,
        trace_configs: Iterable[aiohttp.TraceConfig] | None,
        allow_insecure_http: bool,
    ) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(f"pool_size must be an int of at least 1, not {pool_size!r}")
        if ssl is False and not allow_insecure_http:
            raise ConfigurationError(
                "ssl=False turns certificate verification off, so anyone on the path could read "
                "the AppSecret; pass allow_insecure_http=True as well if you really mean it"
            )
        owns_settings = proxy is not None or trace_configs is not None or ssl is not True
        if session is not None and owns_settings:
            raise ConfigurationError(
                "proxy, ssl and trace_configs configure the client's own session; "
                "set them on the session you pass instead"
            )
        self.pool_size = pool_size
        # Behind a redacted repr: a proxy URL may carry a password.
        self.proxy = Hidden(checked_proxy(proxy))
        self.trust_env = trust_env
        self.ssl = ssl
        self.trace_configs = list(trace_configs) if trace_configs is not None else None

    def new_session(self, url: yarl.URL, credentials: Credentials) -> aiohttp.ClientSession:
        proxy: str | yarl.URL | None = self.proxy.value
        if proxy is None and self.trust_env:
            proxy = checked_proxy(proxy_from_environment(url))
        if proxy is not None:
            credentials.hide_also(proxy_credential_forms(proxy))
        connector = aiohttp.TCPConnector(
            limit=self.pool_size, ssl=self.ssl, timeout_ceil_threshold=math.inf
        )
        return aiohttp.ClientSession(
            connector=connector,
            proxy=proxy,
            trust_env=False,
            trace_configs=self.trace_configs,
            # No default headers: aiohttp would merge them into every request. A compressed
            # answer is safe anyway: its body is read through the capped stream.
        )

    def __repr__(self) -> str:
        return f"<SessionSettings pool_size={self.pool_size}>"


def borrowed_proxy_forms(session: aiohttp.ClientSession) -> set[str]:
    """How the password of a borrowed session's proxy can show up in a failure.

    aiohttp keeps a session's proxy private; a version that moves it just leaves the password to
    the generic blanking of credentials in URLs and Basic tokens (``_transport``).
    """
    forms: set[str] = set()
    proxy = getattr(session, "_default_proxy", None)
    auth = getattr(session, "_default_proxy_auth", None)
    if isinstance(auth, aiohttp.BasicAuth) and auth.password:
        forms |= {*wire_forms(auth.password), auth.encode().removeprefix("Basic ")}
    if isinstance(proxy, str | yarl.URL):
        with contextlib.suppress(ValueError, TypeError):
            forms |= proxy_credential_forms(proxy)
    return forms
