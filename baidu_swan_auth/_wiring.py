"""A client's parts, built from its settings: each setting checked, then the parts wired.

``SwanAuthClient``'s constructor hands its arguments here, so that the public face keeps only
its signature, its documentation and the hot path of ``exchange()``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
import yarl

from ._engine import AttemptHook, Engine, Sleep
from ._lifecycle import SessionHolder
from ._models import SessionKey
from ._operations import CodeExchange, Operation
from ._protocol import Credentials
from ._retry import RetryBudget, default_backoff
from ._settings import (
    API_V2,
    SessionSettings,
    check_credential,
    check_hooks,
    checked_api,
    checked_attempts,
    configured_endpoint,
    positive_number,
)
from ._token_calls import TokenCalls

if TYPE_CHECKING:
    from tenacity.wait import wait_base

    from ._token_store import TokenStore

__all__: list[str] = []


@attrs.frozen
class Parts:
    """What a client is made of."""

    credentials: Credentials
    url: yarl.URL
    api: str
    holder: SessionHolder
    engine: Engine
    token_calls: TokenCalls
    #: The exchange's runner and operation: v1's go straight to the engine; v2's take a token
    #: first. Chosen once, so that the hot path does not ask.
    run: Callable[..., Awaitable[SessionKey]]
    exchange: Operation[Any, SessionKey]


def build_parts(
    client_id: str,
    secret: str,
    *,
    endpoint: str | yarl.URL,
    session: aiohttp.ClientSession | None,
    max_attempts: int,
    timeout: float,
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
    proxy: str | yarl.URL | None,
    trust_env: bool,
    ssl: ssl_module.SSLContext | bool,
    trace_configs: Iterable[aiohttp.TraceConfig] | None,
    allow_insecure_http: bool,
    on_attempt: AttemptHook | None,
    backoff: wait_base | None,
    max_retry_after: float,
    retry_budget: RetryBudget | None,
    sleep: Sleep | None,
    api: str,
    openapi_url: str | yarl.URL,
    token_store: TokenStore | None,
) -> Parts:
    """The parts of a client with these settings (``SwanAuthClient`` documents them)."""
    check_credential("client_id", client_id)
    check_credential("secret", secret)
    credentials = Credentials(client_id, secret)
    url = configured_endpoint(endpoint, allow_insecure_http)
    session_settings = SessionSettings(
        session=session,
        pool_size=pool_size,
        proxy=proxy,
        trust_env=trust_env,
        ssl=ssl,
        trace_configs=trace_configs,
        allow_insecure_http=allow_insecure_http,
    )
    holder = SessionHolder(session, session_settings, url, credentials)
    api = checked_api(api)
    check_hooks(on_attempt=on_attempt, backoff=backoff, sleep=sleep, retry_budget=retry_budget)
    engine = Engine(
        max_attempts=checked_attempts(max_attempts),
        timeout=positive_number("timeout", timeout),
        connect_timeout=positive_number("connect_timeout", connect_timeout),
        read_timeout=positive_number("read_timeout", read_timeout),
        max_retry_after=positive_number("max_retry_after", max_retry_after),
        backoff=backoff if backoff is not None else default_backoff(),
        budget=retry_budget if retry_budget is not None else RetryBudget(),
        sleep=sleep if sleep is not None else asyncio.sleep,
        on_attempt=on_attempt,
        session_closed_error=holder.closed_error,
    )
    token_calls = TokenCalls(
        openapi_url, allow_insecure_http, credentials, token_store, engine, holder
    )
    run: Callable[..., Awaitable[SessionKey]]
    exchange: Operation[Any, SessionKey]
    if api == API_V2:
        run, exchange = token_calls.run, token_calls.session_key
    else:
        run, exchange = engine.run, CodeExchange(url, credentials)
    return Parts(credentials, url, api, holder, engine, token_calls, run, exchange)
