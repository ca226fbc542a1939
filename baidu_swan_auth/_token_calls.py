"""The calls that carry an access token: v2 ``getsessionkey``, ``getunionid``, and the fetch of
the token itself, wired to one client's engine, session and token store.

The client hands a call here with its checked settings; this module finds a token that may be
sent now (``_tokens``), waiting for a renewal only within the call's deadline, and runs the
operation on the engine, which renews a refused token once by itself.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import aiohttp
import yarl

from ._endpoints import openapi_url
from ._engine import FROM_OBSERVER, Engine
from ._errors import ExchangeTimeoutError
from ._flight import Flight, flown
from ._lifecycle import SessionHolder
from ._models import AccessToken
from ._openapi import GETSESSIONKEY_PATH, GETUNIONID_PATH, TOKEN_PATH
from ._operations import Operation, SessionKeyV2, TokenFetch, TokenRequest, UnionIdLookup
from ._protocol import Credentials
from ._token_store import MemoryTokenStore, TokenStore, check_store_timeout
from ._tokens import TokenSource

__all__: list[str] = []

T = TypeVar("T")

#: A fleet's lock on a token outlives the longest fetch by this much, and no more: a holder
#: that dies frees it soon.
_LOCK_SLACK = 5.0


class TokenCalls:
    """One client's token, and the operations that carry it."""

    __slots__ = ("_engine", "_holder", "session_key", "token_fetch", "tokens", "unionid_lookup")

    def __init__(
        self,
        base: str | yarl.URL,
        allow_insecure_http: bool,
        credentials: Credentials,
        store: TokenStore | None,
        engine: Engine,
        holder: SessionHolder,
    ) -> None:
        self._engine = engine
        self._holder = holder
        store = store if store is not None else MemoryTokenStore()
        self.tokens = TokenSource(
            credentials.client_id,
            store,
            self._fetch,
            # Checked here, and read once: a timeout that bounds nothing would hang renewals.
            store_timeout=check_store_timeout(getattr(store, "timeout", None)),
            lock_ttl=engine.timeout + _LOCK_SLACK,
        )
        self.token_fetch = TokenFetch(
            openapi_url(base, allow_insecure_http, TOKEN_PATH), credentials
        )
        self.session_key = SessionKeyV2(
            openapi_url(base, allow_insecure_http, GETSESSIONKEY_PATH), credentials, self.tokens
        )
        self.unionid_lookup = UnionIdLookup(
            openapi_url(base, allow_insecure_http, GETUNIONID_PATH), credentials, self.tokens
        )

    async def _fetch(self) -> AccessToken:
        """Fetch a token from Baidu, with the client's own settings (it belongs to no call)."""
        loop = asyncio.get_running_loop()
        session = self._holder.bind(loop)
        engine = self._engine
        return await engine.run(
            session,
            loop,
            self.token_fetch,
            None,
            Flight(None),
            engine.timeout,
            engine.first_attempt_timeout,
            engine.max_attempts,
        )

    async def access_token(self, holder: SessionHolder, timeout: float | None) -> AccessToken:
        """``SwanAuthClient.access_token``."""
        seconds, _, _ = self._engine.settings_for(timeout, None)
        holder.bind(asyncio.get_running_loop())
        return await self.tokens.get(seconds)

    async def unionid(
        self,
        holder: SessionHolder,
        flights: dict[object, Flight[Any]],
        openid: str,
        timeout: float | None,
        max_attempts: int | None,
    ) -> str:
        """``SwanAuthClient.unionid``, its input checked already: a flight of its own, so that
        ``aclose()`` interrupts it."""
        loop = asyncio.get_running_loop()
        session = holder.bind(loop)
        seconds, attempt_timeout, attempts = self._engine.settings_for(timeout, max_attempts)
        flight = Flight[str](asyncio.current_task())
        lookup = self.run(
            session, loop, self.unionid_lookup, openid, flight, seconds, attempt_timeout, attempts
        )
        return await flown(flights, flight, lookup, holder.closed_error)

    async def run(
        self,
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop,
        operation: Operation[TokenRequest, T],
        value: str,
        flight: Flight[Any],
        timeout: float,
        attempt_timeout: aiohttp.ClientTimeout,
        max_attempts: int,
    ) -> T:
        """Run ``operation`` for ``value`` with a token that may be sent now."""
        engine = self._engine
        observation: Any = FROM_OBSERVER
        token = self.tokens.usable()
        if token is None:
            # The call is observed from before its wait for a token: the fetch is its child,
            # and a fetch that fails is the call's failure.
            observation = engine.observe(operation)
            started = loop.time()
            try:
                token = await self.tokens.get(timeout)
                timeout -= loop.time() - started
                if timeout <= 0:
                    raise ExchangeTimeoutError(
                        "the deadline passed while waiting for an access token"
                    )
            except BaseException as error:
                engine.unobserve(observation, error, flight)
                raise
            attempt_timeout = engine.attempt_timeout(timeout)
        return await engine.run(
            session,
            loop,
            operation,
            TokenRequest(token, value),
            flight,
            timeout,
            attempt_timeout,
            max_attempts,
            observation,
        )
