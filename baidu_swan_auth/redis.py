"""Share access tokens between processes and machines through Redis.

With [`RedisTokenStore`][baidu_swan_auth.redis.RedisTokenStore], every process of a fleet reads
the access token one of them fetched, and a Redis lock makes a single process fetch the next one:

```python
from baidu_swan_auth.redis import RedisTokenStore

async with RedisTokenStore.from_url("redis://localhost:6379/0") as store:
    ...  # hand `store` to the clients
```

It needs the ``redis`` extra: ``pip install 'baidu-swan-auth[redis]'``; importing this module
without it raises [`MissingDependencyError`][baidu_swan_auth.MissingDependencyError]. The rest of
the package never imports Redis.

Redis holds, for each app, the key ``{prefix}token:{client_id}`` (a JSON object with the token
and its times, never the AppSecret) and, while a process fetches, ``{prefix}lock:{client_id}``.
Every key is written with a TTL, so nothing outlives the token or a holder that died.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any, Self

from ._errors import ConfigurationError, MissingDependencyError
from ._models import AccessToken
from ._token_store import DEFAULT_STORE_TIMEOUT, TokenLock, check_store_timeout, finite_number
from ._tokens import is_usable_token

try:
    from redis import Redis as _SyncRedis
    from redis.asyncio import Redis
    from redis.exceptions import LockError, ResponseError
except ImportError as _error:
    raise MissingDependencyError(
        "RedisTokenStore needs the 'redis' package: pip install 'baidu-swan-auth[redis]'",
        package="redis",
    ) from _error

__all__ = ["DEFAULT_PREFIX", "RedisTokenStore"]

#: What every key of the store starts with, unless ``prefix`` says otherwise.
DEFAULT_PREFIX = "baidu_swan_auth:"

# Deletes the token only if it is still the one given. Whatever the key holds (a hash, a value
# that is not JSON), the script answers 0 rather than an error: TYPE first, since GET on another
# type errors, and cjson inside pcall.
_COMPARE_AND_DELETE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local ok, value = pcall(cjson.decode, redis.call('GET', KEYS[1]))
if ok and type(value) == 'table' and value.token == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A lock key with no TTL (garbage, or written by another program) would never be freed: it gets
# the lock's TTL. One script, so that a lock taken between the check and the expiry keeps its own.
_HEAL_LOCK = """
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0
"""


class RedisTokenStore:
    """A [`TokenStore`][baidu_swan_auth.TokenStore] in Redis, shared by every process using it.

    Args:
        redis: The ``redis.asyncio.Redis`` client to use. It stays yours: ``aclose`` leaves it
            open.
        prefix: What every key starts with; the app's ``client_id`` follows, so several apps
            can share one Redis database.
        timeout: Seconds a client waits on the store for one token, the lock wait included.
            Redis calls are not bounded by it: give the client a ``socket_timeout``, or build
            the store with [`from_url`][baidu_swan_auth.redis.RedisTokenStore.from_url].

    Raises:
        ConfigurationError: The timeout is not a positive number, the prefix not a str, or
            ``redis`` a synchronous client.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self.timeout = check_store_timeout(timeout)
        self._prefix = _check_prefix(prefix)
        if isinstance(redis, _SyncRedis):
            raise ConfigurationError("RedisTokenStore needs a redis.asyncio.Redis, not redis.Redis")
        self._redis = redis
        self._owns_client = False
        self._compare_and_delete = redis.register_script(_COMPARE_AND_DELETE)
        self._heal_lock = redis.register_script(_HEAL_LOCK)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        **redis_kwargs: Any,
    ) -> RedisTokenStore:
        """A store with a Redis client of its own, which ``aclose`` closes.

        Args:
            url: The Redis URL, such as ``redis://:password@host:6379/0`` or ``rediss://...``.
            prefix: What every key starts with.
            timeout: Seconds a client waits on the store for one token. Unless given in
                ``redis_kwargs``, it is also the client's ``socket_timeout`` and
                ``socket_connect_timeout``, so that a dead Redis cannot hang a call.
            **redis_kwargs: Passed on to ``redis.asyncio.Redis.from_url``.

        Returns:
            The store.

        Raises:
            ConfigurationError: The timeout is not a positive number or the prefix not a str.
        """
        timeout = check_store_timeout(timeout)
        _check_prefix(prefix)
        redis_kwargs.setdefault("socket_timeout", timeout)
        redis_kwargs.setdefault("socket_connect_timeout", timeout)
        store = cls(Redis.from_url(url, **redis_kwargs), prefix=prefix, timeout=timeout)
        store._owns_client = True
        return store

    async def get(self, client_id: str) -> AccessToken | None:
        """The stored token of the app, or None when there is none or it is unreadable.

        Raises:
            redis.exceptions.RedisError: Redis failed (connection refused, timeout, ...).
        """
        try:
            return _decode(await self._redis.get(self._key("token", client_id)))
        except ResponseError as error:
            if str(error).startswith("WRONGTYPE"):
                return None  # something else sits at the key: no token
            raise

    async def set(self, client_id: str, token: AccessToken, ttl: float) -> None:
        """Store the token, to be forgotten after ``ttl`` seconds (at least a millisecond)."""
        await self._redis.set(
            self._key("token", client_id),
            json.dumps(
                {
                    "token": token.token,
                    "expires_at": token.expires_at,
                    "fetched_at": token.fetched_at,
                }
            ),
            px=_milliseconds(ttl),
        )

    async def invalidate(self, client_id: str, token: AccessToken) -> None:
        """Delete the stored token if it is still ``token``, in one atomic step."""
        await self._compare_and_delete(keys=[self._key("token", client_id)], args=[token.token])

    def lock(self, client_id: str, ttl: float) -> TokenLock:
        """A new lock on the app's token, freed after ``ttl`` seconds if its holder dies."""
        return _RedisLock(self, self._key("lock", client_id), ttl)

    async def aclose(self) -> None:
        """Close the Redis client if [`from_url`][baidu_swan_auth.redis.RedisTokenStore.from_url]
        built it; a client passed in is left open."""
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        # The client is left out: its URL may carry a password.
        return f"<RedisTokenStore prefix={self._prefix!r}>"

    def _key(self, kind: str, client_id: str) -> str:
        return f"{self._prefix}{kind}:{client_id}"


class _RedisLock:
    """One acquisition of an app's lock, on redis-py's own lock."""

    __slots__ = ("_heal", "_lock", "_name", "_ttl_ms")

    def __init__(self, store: RedisTokenStore, name: str, ttl: float) -> None:
        self._name = name
        self._ttl_ms = _milliseconds(ttl)
        self._heal = store._heal_lock
        # thread_local=False: the lock's token belongs to this acquisition, not to whichever
        # thread ran it (the default keeps it in a threading.local).
        self._lock = store._redis.lock(
            name,
            timeout=self._ttl_ms / 1000,
            blocking_timeout=store.timeout,
            thread_local=False,
        )

    async def acquire(self) -> bool:
        """Wait for the lock, at most the store's ``timeout``: True when it is held."""
        await self._heal(keys=[self._name], args=[self._ttl_ms])
        return bool(await self._lock.acquire())

    async def release(self) -> None:
        """Give the lock back; one that expired meanwhile (maybe taken since) is left alone."""
        with contextlib.suppress(LockError):  # LockNotOwnedError included
            await self._lock.release()


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise ConfigurationError("a RedisTokenStore's prefix must be a str")
    return prefix


def _milliseconds(ttl: float) -> int:
    seconds = finite_number(ttl)
    if seconds is None:
        raise ConfigurationError("a TTL must be a finite number of seconds")
    return max(1, math.ceil(seconds * 1000))


def _decode(raw: object) -> AccessToken | None:
    """The token a stored value holds, or None for anything but what ``set`` writes."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        return None
    if not isinstance(value, dict) or not _is_time(value.get("expires_at")):
        return None
    if not _is_time(value.get("fetched_at")) or not isinstance(value.get("token"), str):
        return None
    token = AccessToken(value["token"], float(value["expires_at"]), float(value["fetched_at"]))
    return token if is_usable_token(token) else None


def _is_time(value: object) -> bool:
    return finite_number(value) is not None
