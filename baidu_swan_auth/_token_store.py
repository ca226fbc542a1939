"""Where access tokens are kept: the ``TokenStore`` protocol a store implements, and the
default ``MemoryTokenStore``. ``_tokens`` decides when a token is read, fetched and written;
``redis.RedisTokenStore`` shares tokens between processes."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol

from ._errors import ConfigurationError
from ._models import AccessToken

__all__ = ["MemoryTokenStore", "TokenLock", "TokenStore"]

#: How long a client waits on a store for one token (every call and the lock wait included)
#: unless the store says otherwise.
DEFAULT_STORE_TIMEOUT = 3.0


class TokenLock(Protocol):
    """A lock on one app's token in a store: at most one holder fleet-wide, who fetches."""

    async def acquire(self) -> bool:
        """Wait for the lock, at most the store's ``timeout``: True when it is held."""
        ...

    async def release(self) -> None:
        """Give the lock back; a lock that expired meanwhile is no error."""
        ...


class TokenStore(Protocol):
    """Where the access tokens of a fleet are kept, so that its processes share one.

    [`MemoryTokenStore`][baidu_swan_auth.MemoryTokenStore] is the default;
    [`RedisTokenStore`][baidu_swan_auth.redis.RedisTokenStore] shares tokens between processes
    and machines. A store of your own implements these five members. The client bounds every
    call with ``timeout`` and takes any exception from the store as an outage (logged once,
    and the token is then fetched in-process): a store never makes a call fail. A store holds
    tokens only, never the AppSecret.

    Attributes:
        timeout: Seconds a client waits on the store for one token, the lock wait included.
    """

    timeout: float

    async def get(self, client_id: str) -> AccessToken | None:
        """The stored token of the app ``client_id``, or None (also for an unreadable value)."""
        ...

    async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
        """Store ``token``, to be forgotten after ``ttl`` seconds (when it expires)."""
        ...

    async def invalidate(self, client_id: str, token: AccessToken) -> None:
        """Forget the stored token, but only if it is still ``token`` (compare and delete)."""
        ...

    def lock(self, client_id: str, ttl: float) -> TokenLock:
        """A new lock on the app's token; a holder that dies loses it after ``ttl`` seconds."""
        ...


def finite_number(value: object) -> float | None:
    """``value`` as a finite float, or None (a bool, not a number, NaN, infinite, past a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past any float: 10**400
        return None
    return number if math.isfinite(number) else None


def check_store_timeout(timeout: object) -> float:
    seconds = finite_number(timeout)
    if seconds is None or seconds <= 0:
        raise ConfigurationError("a token store's timeout must be a positive number of seconds")
    return seconds


class MemoryTokenStore:
    """The default store: tokens kept in this process, shared by the clients given the same
    store (one event loop). With no store passed, each client has its own.

    Args:
        timeout: Seconds a client waits on the store for one token, the lock wait included.
    """

    def __init__(self, *, timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self.timeout = check_store_timeout(timeout)
        self._tokens: dict[str, tuple[AccessToken, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, client_id: str) -> AccessToken | None:
        stored = self._tokens.get(client_id)
        if stored is None:
            return None
        token, forget_at = stored
        if time.monotonic() >= forget_at:
            del self._tokens[client_id]
            return None
        return token

    async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
        self._tokens[client_id] = (token, time.monotonic() + ttl)

    async def invalidate(self, client_id: str, token: AccessToken) -> None:
        stored = self._tokens.get(client_id)
        if stored is not None and stored[0].token == token.token:
            del self._tokens[client_id]

    def lock(self, client_id: str, ttl: float) -> TokenLock:
        # The holder is a task of this process, which releases it in a finally: no TTL needed.
        lock = self._locks.setdefault(client_id, asyncio.Lock())
        return _MemoryLock(lock, self.timeout)

    def __repr__(self) -> str:
        return f"<MemoryTokenStore apps={len(self._tokens)}>"


class _MemoryLock:
    __slots__ = ("_held", "_lock", "_wait")

    def __init__(self, lock: asyncio.Lock, wait: float) -> None:
        self._lock = lock
        self._wait = wait
        self._held = False

    async def acquire(self) -> bool:
        try:
            async with asyncio.timeout(self._wait):
                await self._lock.acquire()
        except TimeoutError:
            return False
        self._held = True
        return True

    async def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()
