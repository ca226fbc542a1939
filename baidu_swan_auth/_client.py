"""``SwanAuthClient``: session ownership, the exchange, retries and single-flight."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import inspect
import logging
import math
import os
import ssl as ssl_module
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import yarl
from aiohttp.payload import BytesPayload

from ._endpoints import DEFAULT_ENDPOINT, check_endpoint, is_legacy_url, warn_legacy_once
from ._errors import (
    ClientClosedError,
    CodeConsumedError,
    ConfigurationError,
    ExchangeTimeoutError,
    InvalidCodeError,
    InvalidInputError,
    SwanAuthError,
    TransportError,
    UsageError,
)
from ._models import AttemptEvent, SessionKey, mask_code
from ._protocol import (
    FORM_CONTENT_TYPE,
    AttemptFailure,
    Credentials,
    Hidden,
    detach_cause,
    interpret_answer,
    read_capped_body,
    strip_frames,
    wire_forms,
)
from ._retry import Disposition, RetryBudget, backoff_wait, default_backoff, transport_failure
from .bulk import Outcome, RateLimiter, current_pace
from .bulk import exchange_many as _exchange_many

if TYPE_CHECKING:
    from tenacity.wait import wait_base

__all__ = ["SwanAuthClient"]

MAX_CODE_BYTES = 1024

ENV_CLIENT_ID = "BAIDU_SWAN_CLIENT_ID"
ENV_SECRET = "BAIDU_SWAN_SECRET"  # noqa: S105 (a variable name, not a secret)
ENV_ENDPOINT = "BAIDU_SWAN_ENDPOINT"

logger = logging.getLogger("baidu_swan_auth")


AttemptHook = Callable[[AttemptEvent], object]
Sleep = Callable[[float], Awaitable[object]]


class _Flight:
    """One exchange under way, which concurrent calls with the same code join."""

    __slots__ = ("attempts", "closed_by_client", "task", "unwound", "waiters")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.attempts = 0
        self.waiters: list[asyncio.Future[SessionKey]] = []
        self.closed_by_client = False
        self.unwound: asyncio.Future[None] | None = None

    def succeed(self, result: SessionKey) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(result)
        self.waiters.clear()

    def fail(self, error: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                # Each waiter raises its own copy: one exception object raised in several tasks
                # would collect all their tracebacks.
                shared = copy.copy(error) if isinstance(error, SwanAuthError) else error
                waiter.set_exception(shared)
        self.waiters.clear()


def _configured_endpoint(endpoint: str | yarl.URL, allow_insecure_http: bool) -> yarl.URL:
    """The endpoint to use; an old configuration value naming the legacy URL gets the new one."""
    try:
        legacy = is_legacy_url(yarl.URL(endpoint))
    except (TypeError, ValueError):
        legacy = False  # check_endpoint says what is wrong with it
    if legacy:
        warn_legacy_once(yarl.URL(endpoint))
        endpoint = DEFAULT_ENDPOINT
    return check_endpoint(endpoint, allow_insecure_http)


def _proxy_from_environment(url: yarl.URL) -> str | None:
    # aiohttp's trust_env looks the proxy up again, in a thread, on every request; the environment
    # is read once here instead. Imported here: urllib.request is slow to import, and needed once.
    import urllib.request  # noqa: PLC0415

    host = url.host or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(url.scheme)


def _checked_proxy(proxy: str | yarl.URL | None) -> yarl.URL | None:
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


def _proxy_credential_forms(proxy: str | yarl.URL) -> set[str]:
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


def _check_code(code: object) -> None:
    """Raise ``InvalidInputError`` for a code that cannot be a login code."""
    if not isinstance(code, str):
        raise InvalidInputError(f"a login code must be a str, not {type(code).__name__}")
    if not code:
        raise InvalidInputError("the login code is empty")
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError("the login code is not valid Unicode text") from None
    if size > MAX_CODE_BYTES:
        raise InvalidInputError(f"the login code is {size} bytes long, over {MAX_CODE_BYTES}")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in code):
        raise InvalidInputError("the login code contains control characters")


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past any float: 10**400
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{name} must be finite")
    return seconds


def _check_callables(**hooks: object) -> None:
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise ConfigurationError(f"{name} must be callable, not {type(hook).__name__}")


def _check_credential(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in value):
        # A newline from a badly quoted .env file, most likely: it would be sent and refused.
        raise ConfigurationError(f"{name} contains control characters (a newline?)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{name} is not valid Unicode text (a lone surrogate)") from None


def _attempts(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_attempts must be an int of at least 1, not {value!r}")
    return value


class SwanAuthClient:
    """Exchanges Baidu smart mini program login codes for ``openid`` and ``session_key``.

    One client holds one pooled ``aiohttp.ClientSession``: create it once (per process and event
    loop) and share it between requests, for example in your web framework's startup hook.

    ```python
    async with SwanAuthClient(client_id, secret) as client:
        key = await client.exchange(code)
    ```

    Args:
        client_id: The mini program's AppKey.
        secret: The mini program's AppSecret. It goes in the request body only, never in a URL,
            a log line, a ``repr`` or an exception message.
        endpoint: Baidu's exchange URL. Must be ``https://``, or ``http://`` on a loopback address.
            The legacy ``getSessionKeyByCode`` URL is replaced by the default, with a warning.
        session: Your own ``aiohttp.ClientSession``. The client uses it and never closes it;
            ``pool_size``, ``proxy``, ``ssl`` and ``trace_configs`` are then yours to set on it.
        max_attempts: Attempts per call, the first included.
        timeout: Deadline in seconds for one ``exchange()`` call: all attempts, the waits between
            them, and the wait for a free pooled connection.
        pool_size: Connections the client's own session keeps at most (``TCPConnector(limit=)``).
        connect_timeout: Seconds to connect one attempt (not counting the wait for the pool).
        read_timeout: Seconds one attempt may wait for data from Baidu.
        proxy: An HTTP proxy URL. By default the ``HTTPS_PROXY`` / ``NO_PROXY`` environment is read
            once, when the session is created (``trust_env=False`` turns that off).
        trust_env: Whether to take the proxy from the environment.
        ssl: TLS settings for the client's own session: ``True`` (verify against the system's
            CAs), or an ``ssl.SSLContext`` for a private CA.
        trace_configs: aiohttp ``TraceConfig`` objects for the client's own session.
        allow_insecure_http: Allow a plain ``http://`` endpoint on a non-loopback host, and
            ``ssl=False`` (no certificate verification).
        coalesce: Let concurrent calls with the same code share one request (single-flight).
        on_attempt: Called with an ``AttemptEvent`` after every attempt, for metrics.
        backoff: A tenacity wait strategy for the pause before each retry
            (default: exponential with jitter, 0.1 s doubling to at most 2 s).
        max_retry_after: The longest ``Retry-After`` (seconds) honoured; a longer one ends the call.
        retry_budget: A ``RetryBudget`` to draw retries from (default: one per client).
        sleep: The coroutine function used to wait between attempts (tests inject their own).
    """

    def __init__(
        self,
        client_id: str,
        secret: str,
        *,
        endpoint: str | yarl.URL = DEFAULT_ENDPOINT,
        session: aiohttp.ClientSession | None = None,
        max_attempts: int = 4,
        timeout: float = 10.0,
        pool_size: int = 100,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        proxy: str | yarl.URL | None = None,
        trust_env: bool = True,
        ssl: ssl_module.SSLContext | bool = True,
        trace_configs: Iterable[aiohttp.TraceConfig] | None = None,
        allow_insecure_http: bool = False,
        coalesce: bool = True,
        on_attempt: AttemptHook | None = None,
        backoff: wait_base | None = None,
        max_retry_after: float = 30.0,
        retry_budget: RetryBudget | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        _check_credential("client_id", client_id)
        _check_credential("secret", secret)
        self._credentials = Credentials(client_id, secret)
        self._url = _configured_endpoint(endpoint, allow_insecure_http)
        self._max_attempts = _attempts(max_attempts)
        self._timeout = _positive("timeout", timeout)
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        self._read_timeout = _positive("read_timeout", read_timeout)
        self._max_retry_after = _positive("max_retry_after", max_retry_after)
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
        self._pool_size = pool_size
        # Behind a redacted repr: a proxy URL may carry a password.
        self._proxy = Hidden(_checked_proxy(proxy))
        self._trust_env = trust_env
        self._ssl = ssl
        self._trace_configs = list(trace_configs) if trace_configs is not None else None
        if on_attempt is not None and inspect.iscoroutinefunction(on_attempt):
            raise ConfigurationError(
                "on_attempt must be a plain callable, not a coroutine function"
            )
        _check_callables(on_attempt=on_attempt, backoff=backoff, sleep=sleep)
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            raise ConfigurationError(
                f"retry_budget must be a RetryBudget, not {type(retry_budget).__name__}"
            )
        self._coalesce = coalesce
        self._on_attempt = on_attempt
        self._backoff = backoff if backoff is not None else default_backoff()
        self._budget = retry_budget if retry_budget is not None else RetryBudget()
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep

        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._warned_async_hook = False
        self._warned_backoff = False
        self._hid_session_proxy = False
        self._flights: dict[object, _Flight] = {}
        # Constant per client: the first attempt of a call with the default timeout reuses it.
        self._first_attempt_timeout = self._attempt_timeout(self._timeout)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Build a client from ``BAIDU_SWAN_CLIENT_ID``, ``BAIDU_SWAN_SECRET`` and the optional
        ``BAIDU_SWAN_ENDPOINT``; other settings are passed through as keyword arguments.

        Raises:
            ConfigurationError: a required variable is missing or empty (the message names it).
        """
        missing = [name for name in (ENV_CLIENT_ID, ENV_SECRET) if not os.environ.get(name)]
        if missing:
            raise ConfigurationError(
                f"environment variable{'s' if len(missing) > 1 else ''} "
                f"{' and '.join(missing)} not set"
            )
        endpoint = os.environ.get(ENV_ENDPOINT)
        if endpoint:
            kwargs.setdefault("endpoint", endpoint)
        return cls(os.environ[ENV_CLIENT_ID], os.environ[ENV_SECRET], **kwargs)

    @property
    def client_id(self) -> str:
        """The mini program's AppKey."""
        return self._credentials.client_id

    @property
    def endpoint(self) -> yarl.URL:
        """The URL codes are exchanged at."""
        return self._url

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    @property
    def retry_budget(self) -> RetryBudget:
        """The budget this client's retries draw from."""
        return self._budget

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SwanAuthClient client_id={self.client_id!r} endpoint={str(self._url)!r} {state}>"

    # -- session ownership -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._bind(asyncio.get_running_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        """The session to use from ``loop``, created on first use inside it."""
        if self._closed:
            raise ClientClosedError("the SwanAuthClient is closed")
        if self._loop is None:
            # aiohttp keeps the loop a session belongs to private; a session from another loop
            # would hang rather than fail, so it is checked once here.
            session_loop = getattr(self._session, "_loop", loop)
            if session_loop is not loop:
                raise UsageError(
                    "the aiohttp session passed to SwanAuthClient belongs to another event loop"
                )
            self._loop = loop
        elif self._loop is not loop:
            raise UsageError(
                "this SwanAuthClient belongs to another event loop; create one client per event "
                "loop and per process (never share one across a fork)"
            )
        if self._session is None:
            self._session = self._new_session()
        elif not self._owns_session and not self._hid_session_proxy:
            self._hid_session_proxy = True
            self._hide_proxy_of(self._session)
        return self._session

    def _hide_proxy_of(self, session: aiohttp.ClientSession) -> None:
        """Blank the password of a borrowed session's proxy as the client's own would be.

        aiohttp keeps a session's proxy private; a version that moves it just leaves the
        password to the generic blanking of credentials in URLs and Basic tokens.
        """
        proxy = getattr(session, "_default_proxy", None)
        auth = getattr(session, "_default_proxy_auth", None)
        if isinstance(auth, aiohttp.BasicAuth) and auth.password:
            self._credentials.hide_also(
                {*wire_forms(auth.password), auth.encode().removeprefix("Basic ")}
            )
        if isinstance(proxy, str | yarl.URL):
            with contextlib.suppress(ValueError, TypeError):
                self._credentials.hide_also(_proxy_credential_forms(proxy))

    def _new_session(self) -> aiohttp.ClientSession:
        proxy: str | yarl.URL | None = self._proxy.value
        if proxy is None and self._trust_env:
            proxy = _checked_proxy(_proxy_from_environment(self._url))
        if proxy is not None:
            self._credentials.hide_also(_proxy_credential_forms(proxy))
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, ssl=self._ssl, timeout_ceil_threshold=math.inf
        )
        return aiohttp.ClientSession(
            connector=connector,
            proxy=proxy,
            trust_env=False,
            trace_configs=self._trace_configs,
            # No default headers: aiohttp would merge them into every request. A compressed
            # answer is safe anyway: its body is read through the capped stream.
        )

    async def aclose(self) -> None:
        """Close the client: calls in flight and later calls fail with ``ClientClosedError``.

        The session is closed too when the client created it; a session you passed is left open.
        """
        if self._closing is not None:
            # Another aclose() is under way (or done): return when the session really is closed.
            await asyncio.shield(self._closing)
            return
        running = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not running:
            raise UsageError("close the SwanAuthClient from the event loop it was used in")
        self._closed = True
        self._closing = running.create_future()
        try:
            await self._interrupt_calls_in_flight(running)
        finally:
            # Even when aclose() itself is cancelled (a framework's shutdown timeout), the
            # session it owns gets closed; a later aclose() waits for this.
            try:
                if self._owns_session and self._session is not None:
                    await asyncio.shield(self._session.close())
            finally:
                self._closing.set_result(None)

    async def _interrupt_calls_in_flight(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the tasks running calls (they turn it into ``ClientClosedError``) and wait
        a little for them to unwind, so their connections go back before the session closes."""
        current = asyncio.current_task()
        unwinding: list[asyncio.Future[None]] = []
        for flight in list(self._flights.values()):
            task = flight.task
            if task is None or task is current or task.done():
                continue
            flight.closed_by_client = True
            flight.unwound = loop.create_future()
            unwinding.append(flight.unwound)
            task.cancel()
        if unwinding:
            await asyncio.wait(unwinding, timeout=5.0)

    # -- the exchange ------------------------------------------------------------------------

    async def exchange(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> SessionKey:
        """Exchange one login code for the user's ``openid`` and ``session_key``.

        Args:
            code: The code ``swan.login()`` gave the mini program. It is sent byte for byte.
            timeout: This call's deadline in seconds (default: the client's ``timeout``).
            max_attempts: This call's attempts, the first included (default: the client's).

        Returns:
            The ``SessionKey``.

        Raises:
            InvalidInputError: The code is empty, over 1 KiB or contains control characters.
            InvalidCodeError: Baidu says the code is invalid, expired or already used.
            CodeConsumedError: As above, after an earlier attempt may have spent the code.
            InvalidClientError: Baidu refuses the AppKey or AppSecret.
            ApiError: Any other error Baidu answered with.
            ServiceUnavailableError: Baidu stayed overloaded or broken.
            TransportError: The connection kept failing.
            ExchangeTimeoutError: The deadline passed.
            ResponseError: Baidu's answer made no sense.
            ClientClosedError: The client was closed before or during the call.
        """
        if (
            type(code) is not str
            or not code
            or len(code) > MAX_CODE_BYTES
            or not code.isascii()
            or not code.isprintable()
        ):
            _check_code(code)
        loop = asyncio.get_running_loop()
        session = self._session
        if loop is not self._loop or session is None or self._closed:
            session = self._bind(loop)
        # self._flights is not copied into a local: error trackers record the locals of a failed
        # call's frames, and that dict holds the codes of every other call in flight.
        key: object = code if self._coalesce else object()
        flight = self._flights.get(key)
        if flight is not None:
            return await self._join(flight, timeout, max_attempts)
        flight = _Flight(asyncio.current_task())
        self._flights[key] = flight
        try:
            result = await self._run(session, loop, flight, code, timeout, max_attempts)
        except asyncio.CancelledError as cancelled:
            # The cancellation came through aiohttp's frames, which hold the request (and a
            # proxy's URL with its password): it leaves without them, whoever raises it next.
            strip_frames(cancelled)
            replacement = self._cancellation_error(flight)
            if replacement is None:
                flight.fail(
                    TransportError(
                        "the shared request for this code was cancelled by its first caller; "
                        "the code may have been spent",
                        attempts=flight.attempts,
                    )
                )
                raise
            flight.fail(replacement)
            raise replacement from None
        except BaseException as error:
            flight.fail(error)
            raise
        else:
            if flight.waiters:
                flight.succeed(result)
            return result
        finally:
            del self._flights[key]
            if flight.unwound is not None:
                flight.unwound.set_result(None)

    def exchange_many(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 16,
        rate: float | RateLimiter | None = None,
    ) -> AsyncGenerator[Outcome, None]:
        """Exchange many codes, yielding one [`Outcome`][baidu_swan_auth.bulk.Outcome] per input.

        ```python
        async with contextlib.aclosing(client.exchange_many(rows, rate=50)) as outcomes:
            async for outcome in outcomes:
                ...  # outcome.tag, outcome.ok, outcome.result or outcome.error
        ```

        Args:
            items: Codes, or ``(tag, code)`` pairs where ``tag`` is anything you want back (a
                user id, a row number); an iterable or an async iterable. Read lazily, never
                more than about ``concurrency`` ahead, so a generator of millions is fine.
            concurrency: Calls in flight at most.
            rate: Requests per second at most for the whole job, retries included, spaced
                evenly (no initial burst). The wait for the rate limit comes before a call
                starts and does not count against its ``timeout`` (a retry's wait does, as
                it happens inside the call). A [`RateLimiter`][baidu_swan_auth.bulk.RateLimiter]
                can be passed instead, to share one limit between jobs.

        Returns:
            An async iterator of outcomes, in completion order. A failing item never raises:
            its outcome carries the ``SwanAuthError``. Exactly one outcome per input.
            Leaving the loop early (``break``) or closing the iterator cancels the calls in
            flight; wrap it in ``contextlib.aclosing`` for that to happen at once rather than
            when the iterator is garbage-collected.

        Raises:
            ConfigurationError: ``concurrency`` or ``rate`` is not a positive number, or
                ``items`` is not iterable or is a single ``str`` or ``bytes`` (pass ``[code]``).
        """
        return _exchange_many(self, items, concurrency=concurrency, rate=rate)

    def _cancellation_error(self, flight: _Flight) -> SwanAuthError | None:
        """What a cancelled call raises instead, or None to let the cancellation through."""
        task = flight.task
        if flight.closed_by_client:
            if task is not None and task.uncancel() > 0:
                return None  # somebody else cancelled the task as well
            closed = ClientClosedError(
                "the SwanAuthClient was closed during the call", attempts=flight.attempts
            )
            closed.code_may_be_spent = flight.attempts > 0  # a request may have gone out
            return closed
        if task is not None and task.cancelling() == 0:
            # Nobody cancelled the task: aiohttp cancels the calls queued for a pooled connection
            # when their session is closed under them.
            return self._session_closed_error()
        return None

    async def _join(
        self, flight: _Flight, timeout: float | None, max_attempts: int | None
    ) -> SessionKey:
        """Wait for the result of an exchange of the same code that is already under way.

        The shared request runs with the first caller's settings; ``max_attempts`` is only
        checked, ``timeout`` bounds this caller's wait.
        """
        seconds = self._timeout if timeout is None else _positive("timeout", timeout)
        if max_attempts is not None:
            _attempts(max_attempts)
        waiter: asyncio.Future[SessionKey] = asyncio.get_running_loop().create_future()
        flight.waiters.append(waiter)
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await waiter
        except TimeoutError:
            if deadline.expired():
                raise ExchangeTimeoutError(
                    "the deadline passed while waiting for a shared exchange of the same code"
                ) from None
            raise

    def _attempt_timeout(self, remaining: float) -> aiohttp.ClientTimeout:
        # total bounds the attempt by the call's deadline (the pool wait included);
        # sock_connect and sock_read bound the network, never the wait for a pooled connection.
        return aiohttp.ClientTimeout(
            total=remaining,
            sock_connect=min(self._connect_timeout, remaining),
            sock_read=min(self._read_timeout, remaining),
            # aiohttp rounds timeouts over ceil_threshold (5 s) up to a whole second of the
            # loop's clock, which let a slow answer run up to a second past the deadline.
            ceil_threshold=math.inf,
        )

    async def _run(
        self,
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop,
        flight: _Flight,
        code: str,
        timeout: float | None,
        max_attempts: int | None,
    ) -> SessionKey:
        started = loop.time()
        if timeout is None:
            timeout = self._timeout
            attempt_timeout = self._first_attempt_timeout
        else:
            timeout = _positive("timeout", timeout)
            attempt_timeout = self._attempt_timeout(timeout)
        max_attempts = self._max_attempts if max_attempts is None else _attempts(max_attempts)
        self._budget.deposit()
        flight.attempts = 1
        try:
            result = await self._attempt(session, code, attempt_timeout)
        except AttemptFailure as failure:
            first_failure = failure
        else:
            if self._on_attempt is not None or logger.isEnabledFor(logging.DEBUG):
                elapsed = loop.time() - started
                self._report(mask_code(code), 1, "ok", 200, elapsed, None, "success", None)
            return result
        # Outside the except block, so the error the call raises does not drag the internal
        # AttemptFailure (and the frames that parsed Baidu's answer) along as its __context__.
        return await self._retry(
            session, loop, flight, code, first_failure, started, started + timeout, max_attempts
        )

    async def _attempt(
        self, session: aiohttp.ClientSession, code: str, timeout: aiohttp.ClientTimeout
    ) -> SessionKey:
        payload = BytesPayload(self._credentials.form_body(code), content_type=FORM_CONTENT_TYPE)
        try:
            # Awaited rather than `async with`: the context manager's two extra coroutine frames
            # would be resumed on every wake-up of every call; release() in finally does the same.
            response = await session.post(
                self._url, data=payload, timeout=timeout, allow_redirects=False
            )
            try:
                status = response.status
                headers = response.headers
                body = await read_capped_body(response)
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error, disposition = transport_failure(exc)
            # What aiohttp said, for whoever debugs the network, without the frames that hold
            # the request body and without any echo of the secret or the code.
            error.__cause__ = detach_cause(exc, self._credentials.redactor(code))
            raise AttemptFailure(error, disposition) from None
        except RuntimeError as exc:
            if session.closed:
                raise AttemptFailure(self._session_closed_error(), Disposition.FINAL) from None
            raise AttemptFailure(
                TransportError(f"request to Baidu failed ({type(exc).__name__})"),
                Disposition.FINAL,
            ) from None
        return interpret_answer(status, headers, body, self._credentials, code)

    def _session_closed_error(self) -> SwanAuthError:
        if self._closed or self._owns_session:
            return ClientClosedError("the SwanAuthClient was closed during the call")
        return UsageError("the aiohttp session passed to SwanAuthClient is closed")

    async def _retry(
        self,
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop,
        flight: _Flight,
        code: str,
        failure: AttemptFailure,
        started: float,
        deadline: float,
        max_attempts: int,
    ) -> SessionKey:
        """Retry after a failed first attempt: the slow path, which pays for the bookkeeping."""
        attempt = 1
        attempt_started = started
        may_have_spent = False
        masked = mask_code(code)
        while True:
            now = loop.time()
            elapsed = now - attempt_started
            may_have_spent |= failure.disposition is Disposition.AMBIGUOUS
            reason, wait = self._plan_retry(failure, attempt, max_attempts, deadline - now, elapsed)
            self._report(
                masked,
                attempt,
                _outcome(failure.error),
                failure.status,
                elapsed,
                getattr(failure.error, "error", None),
                reason,
                wait,
            )
            if wait is None:
                raise self._final_error(failure, attempt, may_have_spent)
            await self._pause(wait)
            if self._closed:
                raise ClientClosedError(
                    "the SwanAuthClient was closed during the call", attempts=attempt
                )
            pace = current_pace.get()
            if pace is not None:  # the job's rate limit counts retries too
                try:
                    async with asyncio.timeout_at(deadline):
                        await pace.acquire()
                except TimeoutError:
                    raise self._final_error(failure, attempt, may_have_spent) from None
            attempt += 1
            flight.attempts = attempt
            attempt_started = loop.time()
            remaining = deadline - attempt_started
            if remaining <= 0:
                raise self._final_error(failure, attempt - 1, may_have_spent)
            try:
                result = await self._attempt(session, code, self._attempt_timeout(remaining))
            except AttemptFailure as next_failure:
                failure = next_failure
                continue
            elapsed = loop.time() - attempt_started
            self._report(masked, attempt, "ok", 200, elapsed, None, "success", None)
            return result

    def _plan_retry(
        self,
        failure: AttemptFailure,
        attempt: int,
        max_attempts: int,
        remaining: float,
        last_attempt_took: float,
    ) -> tuple[str, float | None]:
        """Why the call stops (and None), or ``("retrying", seconds to wait)``.

        A retry is expected to take as long as the attempt before it; one that could not finish
        before the deadline is not started.
        """
        if failure.disposition is Disposition.FINAL:
            return "final", None
        if self._closed:
            return "closed", None
        if attempt >= max_attempts:
            return "attempts", None
        wait: float | None
        if failure.retry_after is not None:
            if failure.retry_after > self._max_retry_after:
                return "retry_after_cap", None
            wait = failure.retry_after
        else:
            wait = backoff_wait(self._backoff, attempt, failure.error)
            if wait is None:
                self._warn_once_about_backoff()
                return "backoff", None
        if wait + last_attempt_took >= remaining:
            return "deadline", None
        if not self._budget.try_withdraw():
            return "budget", None
        return "retrying", wait

    def _pause(self, seconds: float) -> Awaitable[object]:
        waiting = self._sleep(seconds)
        if not inspect.isawaitable(waiting):
            raise ConfigurationError(
                f"sleep must return an awaitable (an async def function), not "
                f"{type(waiting).__name__}"
            )
        return waiting

    def _warn_once_about_backoff(self) -> None:
        if not self._warned_backoff:
            self._warned_backoff = True
            logger.warning(
                "the backoff strategy raised or gave no finite wait of 0 s or more; "
                "calls that need it are not retried"
            )

    @staticmethod
    def _final_error(failure: AttemptFailure, attempts: int, may_have_spent: bool) -> Exception:
        error = failure.error
        if may_have_spent and type(error) is InvalidCodeError:
            error = CodeConsumedError(
                "Baidu says the code is invalid after an earlier attempt of this call may have "
                "reached it: that attempt most likely spent the code; ask the user to log in again",
                error=error.error,
                description=error.description,
                status=error.status,
            )
        if isinstance(error, SwanAuthError):
            error.attempts = attempts
            error.code_may_be_spent = may_have_spent or failure.disposition is Disposition.AMBIGUOUS
        return error

    def _report(
        self,
        masked_code: str,
        attempt: int,
        outcome: str,
        status: int | None,
        elapsed: float,
        error: str | None,
        reason: str,
        wait: float | None,
    ) -> None:
        # Takes the masked code only: logger.exception below records this frame's locals.
        masked = masked_code
        if logger.isEnabledFor(logging.DEBUG):
            decision = f"retry in {wait:.3f}s" if wait is not None else f"done ({reason})"
            logger.debug(
                "exchange code=%s attempt=%d outcome=%s status=%s elapsed=%.3fs: %s",
                masked,
                attempt,
                outcome,
                status,
                elapsed,
                decision,
            )
        if self._on_attempt is None:
            return
        event = AttemptEvent(
            code=masked,
            attempt=attempt,
            outcome=outcome,
            status=status,
            elapsed=elapsed,
            error=error,
            will_retry=wait is not None,
            retry_in=wait,
            reason=reason,
        )
        try:
            returned = self._on_attempt(event)
        except Exception:
            logger.exception("the on_attempt hook raised; the exchange goes on")
            return
        if inspect.iscoroutine(returned):
            returned.close()  # never awaited: close it rather than leak a warning per attempt
            if not self._warned_async_hook:
                self._warned_async_hook = True
                logger.warning("the on_attempt hook returned a coroutine, which is not awaited")


def _outcome(error: Exception) -> str:
    kind: str = getattr(error, "kind", "error")
    return kind
