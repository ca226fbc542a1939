"""``SwanAuthClient``: the public face of the exchange and of the access-token calls.

Its constructor has its parts built (``_wiring``: settings checked, the session's holder, the
engine, the token calls); it hands each call to the engine (``_engine``) as an operation
(``_operations``), with single-flight of duplicate codes (``_flight``). ``exchange_many``
drives ``exchange`` through ``_many``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import yarl

from ._endpoints import DEFAULT_ENDPOINT, DEFAULT_OPENAPI_URL
from ._engine import AttemptHook, Sleep
from ._flight import Flight, join
from ._many import exchange_many
from ._models import AccessToken, Outcome, SessionKey
from ._pacing import RateLimiter
from ._retry import RetryBudget
from ._settings import API_V1, MAX_CODE_BYTES, check_code, credentials_from_environment
from ._wiring import build_parts

if TYPE_CHECKING:
    from tenacity.wait import wait_base

    from ._token_store import TokenStore

__all__ = ["SwanAuthClient"]


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
        api: ``"jscode2sessionkey"`` (v1: the AppSecret goes with each code) or
            ``"getsessionkey"`` (v2: an access token goes with each code). Either gives the
            same ``SessionKey``; see the access-token how-to for the differences.
        openapi_url: The base URL of the access-token APIs (the token, v2 ``getsessionkey``,
            ``getunionid``), under the same https rule as ``endpoint``.
        token_store: Where access tokens are kept: a
            [`RedisTokenStore`][baidu_swan_auth.redis.RedisTokenStore] shares one token between
            the processes of a fleet. Default: a ``MemoryTokenStore`` of this client's own.
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
        api: str = API_V1,
        openapi_url: str | yarl.URL = DEFAULT_OPENAPI_URL,
        token_store: TokenStore | None = None,
    ) -> None:
        parts = build_parts(
            client_id, secret, endpoint=endpoint, session=session, max_attempts=max_attempts,
            timeout=timeout, pool_size=pool_size, connect_timeout=connect_timeout,
            read_timeout=read_timeout, proxy=proxy, trust_env=trust_env, ssl=ssl,
            trace_configs=trace_configs, allow_insecure_http=allow_insecure_http,
            on_attempt=on_attempt, backoff=backoff, max_retry_after=max_retry_after,
            retry_budget=retry_budget, sleep=sleep, api=api, openapi_url=openapi_url,
            token_store=token_store,
        )  # fmt: skip
        self._credentials, self._url, self._api = parts.credentials, parts.url, parts.api
        self._holder, self._engine = parts.holder, parts.engine
        self._token_calls, self._run, self._exchange = parts.token_calls, parts.run, parts.exchange
        self._coalesce = coalesce
        self._flights: dict[object, Flight[Any]] = {}

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Build a client from ``BAIDU_SWAN_CLIENT_ID``, ``BAIDU_SWAN_SECRET`` and the optional
        ``BAIDU_SWAN_ENDPOINT``, ``BAIDU_SWAN_API`` and ``BAIDU_SWAN_OPENAPI_URL``; other
        settings are passed through as keyword arguments (and win over the environment).

        Raises:
            ConfigurationError: a required variable is missing or empty (the message names it).
        """
        client_id, secret = credentials_from_environment(kwargs)
        return cls(client_id, secret, **kwargs)

    @property
    def client_id(self) -> str:
        """The mini program's AppKey."""
        return self._credentials.client_id

    @property
    def endpoint(self) -> yarl.URL:
        """The URL codes are exchanged at."""
        return self._url

    @property
    def api(self) -> str:
        """The exchange API: ``"jscode2sessionkey"`` (v1) or ``"getsessionkey"`` (v2)."""
        return self._api

    @property
    def token_store(self) -> TokenStore:
        """Where this client's access tokens are kept."""
        return self._token_calls.tokens.store

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._holder.closed

    @property
    def retry_budget(self) -> RetryBudget:
        """The budget this client's retries draw from."""
        return self._engine.budget

    def __repr__(self) -> str:
        state = "closed" if self._holder.closed else "open"
        return f"<SwanAuthClient client_id={self.client_id!r} endpoint={str(self._url)!r} {state}>"

    # -- session ownership -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._holder.bind(asyncio.get_running_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: calls in flight and later calls fail with ``ClientClosedError``.

        The session is closed too when the client created it; a session you passed is left open.
        """
        await self._holder.aclose(
            self._engine, self._flights.values(), self._token_calls.tokens.aclose
        )

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
            InvalidCodeError: Baidu says the code is invalid, expired or already used (v1).
            CodeConsumedError: As above, after an earlier attempt may have spent the code (v1).
            InvalidClientError: Baidu refuses the AppKey or AppSecret.
            TokenRejectedError: Baidu refused the access token, and a fresh one too (v2).
            ApiError: Any other error Baidu answered with (on v2, ``errno`` says which).
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
            check_code(code)
        loop = asyncio.get_running_loop()
        holder = self._holder
        session = holder.session
        if loop is not holder.loop or session is None or holder.closed:
            session = holder.bind(loop)
        engine = self._engine
        # self._flights is not copied into a local: error trackers record the locals of a failed
        # call's frames, and that dict holds the codes of every other call in flight.
        key: object = code if self._coalesce else object()
        flight = self._flights.get(key)
        if timeout is None and max_attempts is None:
            timeout, attempt_timeout = engine.timeout, engine.first_attempt_timeout
            max_attempts = engine.max_attempts
        else:
            timeout, attempt_timeout, max_attempts = engine.settings_for(timeout, max_attempts)
        if flight is not None:
            # The shared request runs with the first caller's settings; this caller's timeout
            # bounds its own wait.
            return await join(flight, timeout)
        flight = Flight(asyncio.current_task())
        self._flights[key] = flight
        try:
            result: SessionKey = await self._run(
                session, loop, self._exchange, code, flight, timeout, attempt_timeout, max_attempts
            )
        except asyncio.CancelledError as cancelled:
            replacement = flight.cancelled(cancelled, holder.closed_error)
            if replacement is None:
                raise
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
            flight.finish()

    async def access_token(self, *, timeout: float | None = None) -> AccessToken:
        """The app's access token for Baidu's OpenAPI: cached, renewed before it expires, and
        fetched once however many calls need it at the same moment.

        Args:
            timeout: Seconds to wait for a token (default: the client's ``timeout``).

        Raises:
            InvalidClientError: Baidu refuses the AppKey or AppSecret.
            ExchangeTimeoutError: No token came within ``timeout``.
            ClientClosedError: The client was closed before or during the call.
            SwanAuthError: The other failures of ``exchange()``: unavailable, transport,
                response.
        """
        return await self._token_calls.access_token(self._holder, timeout)

    async def unionid(
        self, openid: str, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> str:
        """The user's unionid (the same for every mini program of one developer account).

        Works with either ``api``; it needs an access token, fetched as ``access_token()`` does.

        Args:
            openid: The user's openid in this mini program.
            timeout: This call's deadline in seconds (default: the client's ``timeout``).
            max_attempts: This call's attempts, the first included (default: the client's).

        Raises:
            InvalidInputError: The openid is empty, over 1 KiB or contains control characters.
            ApiError: Baidu answered with an error; ``errno`` says which.
            TokenRejectedError: Baidu refused the access token, and a fresh one too.
            SwanAuthError: The other failures of ``exchange()``: unavailable, transport,
                timeout, response, closed.
        """
        check_code(openid, "openid")
        calls = self._token_calls
        return await calls.unionid(self._holder, self._flights, openid, timeout, max_attempts)

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
        return exchange_many(self.exchange, items, concurrency=concurrency, rate=rate)
