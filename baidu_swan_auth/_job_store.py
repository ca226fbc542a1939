"""The bulk job's access-token store: the web fleet's Redis, named by ``BAIDU_SWAN_REDIS_URL``.

redis-py is imported only when the variable is set; the URL (it may carry a password) is never
shown, not even inside redis-py's own messages; closing the store never fails the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from typing import TYPE_CHECKING

from ._errors import MissingDependencyError

if TYPE_CHECKING:
    from .redis import RedisTokenStore

__all__: list[str] = []

#: A Redis URL (it may carry a password: it is never shown) whose token store the job shares with
#: the web fleet, so that a bulk v2 job uses the fleet's access token rather than one of its own.
ENV_REDIS_URL = "BAIDU_SWAN_REDIS_URL"
#: How long closing the Redis client may take at the end of a job, at most.
_STORE_CLOSE_TIMEOUT = 5.0


class StoreRefused(Exception):
    """The Redis token store cannot be built: the message says why, without the URL."""


def redis_store(url: str) -> RedisTokenStore:
    """The job's token store in Redis at ``url``; redis-py is imported here, and only here."""
    try:
        from .redis import RedisTokenStore  # noqa: PLC0415 (the redis extra, when asked for)
    except MissingDependencyError:
        raise StoreRefused(
            f"{ENV_REDIS_URL} is set, but sharing the access token through Redis needs "
            "redis-py: pip install 'baidu-swan-auth[redis]', or unset "
            f"{ENV_REDIS_URL}"
        ) from None
    try:
        # The store's defaults, those of the fleet's own from_url(url): the same keys, and the
        # same lock wait, so that the job fetches no token a web process is fetching already.
        return RedisTokenStore.from_url(url)
    except (ValueError, TypeError) as error:  # redis-py's own parsing of the URL
        raise StoreRefused(
            f"{ENV_REDIS_URL} is not a usable Redis URL: {_without_secrets(str(error), url)}"
        ) from None


def _without_secrets(text: str, url: str) -> str:
    """``text`` with the URL and its password, in every form the URL holds it, blanked."""
    secrets = {url}
    with contextlib.suppress(ValueError):
        password = urllib.parse.urlsplit(url).password
        if password:
            secrets |= {password, urllib.parse.unquote(password)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


async def close_store(store: RedisTokenStore) -> None:
    """Close the store's Redis client: a failure to do so is no failure of the job, and its
    message (which may name the server) is not shown."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_STORE_CLOSE_TIMEOUT):
            await store.aclose()
