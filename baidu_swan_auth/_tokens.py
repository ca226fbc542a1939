"""Access tokens: where they are kept (``TokenStore``), and when they are fetched (``TokenSource``).

The rules, from one process up to a fleet sharing one store:

* **A warm process asks nobody.** Each client keeps a local copy of its token and uses it, with no
  store call, until the token's *refresh point*. Past it, one renewal starts in the background
  while calls go on with the still-valid token; only past the *last use* point (a little before
  the expiry: a token known to be expired is never sent) do calls wait for the renewal.
* **One renewal per process.** The renewal is a task that belongs to no caller: callers wait on
  it through ``asyncio.shield``, so a cancelled caller cancels nobody else's wait.
* **One fetch per fleet.** A renewal reads the store; only when the store has no fresh token does
  it take the store's lock, read again, and fetch from Baidu, then write the token with a TTL.
  A lock wait that times out reads the store once more before it fetches.
* **A rejected token** (Baidu's 110/111) is deleted from the store only if the store still holds
  that same token (compare and delete), so a late rejection never deletes its successor.
* **The store is never a new way to fail.** The store's work before a fetch (read, lock, read
  again) is bounded by the store's ``timeout`` as a whole, and so is its work after; a store
  that fails, hangs or holds garbage is logged once per outage, the token is fetched in-process
  under the same rules as without a store, and renewals do without the store for a while.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

from ._errors import ClientClosedError, ExchangeTimeoutError, SwanAuthError
from ._models import AccessToken
from ._openapi import is_token_text
from ._token_store import TokenLock, TokenStore, finite_number

__all__: list[str] = []

logger = logging.getLogger("baidu_swan_auth")

T = TypeVar("T")

#: A renewal starts this share of the lifetime before the expiry, at most an hour before.
_REFRESH_SHARE = 0.25
_LONGEST_REFRESH_MARGIN = 3600.0
#: A token is not sent in its last twentieth of life, at most the last 30 s: it could expire on
#: the way.
_LAST_USE_SHARE = 0.05
_LONGEST_LAST_USE_MARGIN = 30.0
#: A lock's own wait is bounded by the store's timeout: the client's bound on the store's work
#: before a fetch is this longer, so that it rarely cancels an acquire that just succeeded (the
#: lock would then be held, by nobody, until its TTL).
_LOCK_WAIT_MARGIN = 1.0
#: After a store failure, renewals do without the store for this long (seconds): an outage
#: costs one bounded wait, not one per renewal.
_STORE_REST = 30.0


@attrs.frozen
class _Schedule:
    """When a token is renewed, and until when it may be sent."""

    token: AccessToken
    refresh_at: float
    last_use: float

    @classmethod
    def of(cls, token: AccessToken) -> _Schedule:
        lifetime = max(token.lifetime, 0.0)
        refresh_margin = min(lifetime * _REFRESH_SHARE, _LONGEST_REFRESH_MARGIN)
        last_use_margin = min(lifetime * _LAST_USE_SHARE, _LONGEST_LAST_USE_MARGIN)
        return cls(token, token.expires_at - refresh_margin, token.expires_at - last_use_margin)


def is_usable_token(token: object) -> bool:
    """Whether a store's answer is a token worth reading (a custom store may hand back junk):
    a token of the shape Baidu's answers are checked for, and finite times."""
    return (
        type(token) is AccessToken
        and type(token.token) is str
        and is_token_text(token.token)
        and finite_number(token.expires_at) is not None
        and finite_number(token.fetched_at) is not None
    )


class TokenSource:
    """One client's access token: its local copy, its renewal, and the store behind them."""

    def __init__(
        self,
        client_id: str,
        store: TokenStore,
        fetch: Callable[[], Awaitable[AccessToken]],
        *,
        store_timeout: float,
        lock_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._store = store
        self._fetch = fetch
        self._lock_ttl = lock_ttl
        # Read once, checked (a store's attribute could go bad later, outside every bound).
        self._store_timeout = store_timeout
        self._clock = clock
        self._schedule: _Schedule | None = None
        self._renewal: asyncio.Task[AccessToken | SwanAuthError] | None = None
        self._background_retry_at = -math.inf
        self._store_down = False
        self._store_failed_at = -math.inf
        self.closed = False

    @property
    def store(self) -> TokenStore:
        return self._store

    def usable(self) -> AccessToken | None:
        """The local token when it may be sent now, with no wait: the hot path.

        Past the refresh point it starts a renewal in the background and still answers.
        """
        schedule = self._schedule
        if schedule is None:
            return None
        now = self._clock()
        if now < schedule.refresh_at:
            return schedule.token
        if now >= schedule.last_use:
            return None
        if self._renewal is None and now >= self._background_retry_at:
            self._start_renewal(None)
        return schedule.token

    async def get(self, timeout: float) -> AccessToken:
        """A token that may be sent now, waiting for a renewal at most ``timeout`` seconds."""
        token = self.usable()
        if token is not None:
            return token
        return await self._wait_for_renewal(None, timeout)

    async def replace(self, rejected: AccessToken, timeout: float) -> AccessToken:
        """A token other than ``rejected``, which Baidu refused: fetched or read again."""
        schedule = self._schedule
        if schedule is not None:
            if schedule.token.token == rejected.token:
                self._schedule = None
            elif self._clock() < schedule.last_use:
                return schedule.token  # a late rejection: its successor is here already
        return await self._wait_for_renewal(rejected, timeout)

    async def aclose(self) -> None:
        """Cancel a renewal under way; its waiters get ``ClientClosedError``."""
        self.closed = True
        renewal = self._renewal
        # A store's cleanup may swallow one cancellation (a lock release that hangs): cancel
        # again, a bounded number of times, until the renewal is gone.
        for _ in range(10):
            if renewal is None or renewal.done():
                return
            renewal.cancel()
            await asyncio.wait([renewal], timeout=0.5)

    # -- the renewal ----------------------------------------------------------------------

    async def _wait_for_renewal(self, rejected: AccessToken | None, timeout: float) -> AccessToken:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                # Joining a renewal that started before the rejection may bring the rejected
                # token back from the store: then one more, which reads past it.
                for _ in range(2):
                    renewal = self._renewal or self._start_renewal(rejected)
                    outcome = await asyncio.shield(renewal)
                    if isinstance(outcome, SwanAuthError):
                        # Every waiter raises its own copy: one exception object raised in several
                        # tasks would collect all their tracebacks.
                        raise copy.copy(outcome)
                    if rejected is None or outcome.token != rejected.token:
                        return outcome
        except TimeoutError:
            if deadline.expired():
                raise ExchangeTimeoutError(
                    "the deadline passed while waiting for an access token"
                ) from None
            raise
        raise ExchangeTimeoutError("no access token other than the rejected one came back")

    def _start_renewal(
        self, rejected: AccessToken | None
    ) -> asyncio.Task[AccessToken | SwanAuthError]:
        if self.closed:
            raise ClientClosedError("the SwanAuthClient is closed")
        renewal = asyncio.get_running_loop().create_task(self._renew(rejected))
        self._renewal = renewal
        return renewal

    async def _renew(self, rejected: AccessToken | None) -> AccessToken | SwanAuthError:
        """The renewal task: a token, or the error its waiters raise (never raised here, so no
        exception object is shared between tasks)."""
        try:
            token = await self._obtain(rejected)
        except SwanAuthError as error:
            self._renewal_failed()
            return error
        except Exception as error:  # a bug, or a store misbehaving outside every bound
            self._renewal_failed()
            logger.warning("renewing the access token failed unexpectedly", exc_info=False)
            return SwanAuthError(
                f"renewing the access token failed unexpectedly ({type(error).__name__})"
            )
        except asyncio.CancelledError:
            self._renewal_failed()
            return ClientClosedError("the SwanAuthClient was closed while fetching a token")
        finally:
            self._renewal = None
        self._schedule = _Schedule.of(token)
        return token

    def _renewal_failed(self) -> None:
        # While the old token still works, a failing renewal is tried again a little later, not
        # on every call that passes by.
        schedule = self._schedule
        if schedule is not None:
            now = self._clock()
            self._background_retry_at = now + min(5.0, max(schedule.last_use - now, 0.0) / 4)

    async def _obtain(self, rejected: AccessToken | None) -> AccessToken:
        if self._store_resting():
            return await self._fetch()
        store, client_id = self._store, self._client_id
        # The store's work before a fetch shares one bound, so that a store that hangs costs
        # one timeout, not one per command; a failed command skips the rest.
        before_fetch = asyncio.get_running_loop().time() + self._store_timeout + _LOCK_WAIT_MARGIN
        if rejected is not None:
            await self._bounded(lambda: store.invalidate(client_id, rejected), None, before_fetch)
        token = await self._stored(rejected, before_fetch)
        if token is not None:
            return token
        lock = None if self._store_down else self._new_lock()
        acquired = False
        if lock is not None:
            # Looked up inside the bound: a lock object without the method is an outage too.
            acquire = lambda: lock.acquire()  # noqa: E731, PLW0108
            acquired = await self._bounded(acquire, False, before_fetch)
        try:
            if not self._store_down:
                # Whoever held the lock may have stored a fresh token meanwhile; after a lock
                # wait that timed out, this last read spares a fetch when the holder was slow.
                token = await self._stored(rejected, before_fetch)
            if token is None:
                token = await self._fetch()
                ttl = token.expires_at - self._clock()
                if ttl > 0 and not self._store_down:
                    after_fetch = asyncio.get_running_loop().time() + self._store_timeout
                    await self._bounded(lambda: store.set(client_id, token, ttl), None, after_fetch)
        finally:
            if acquired and lock is not None:
                after_fetch = asyncio.get_running_loop().time() + self._store_timeout
                release = lambda: lock.release()  # noqa: E731, PLW0108 - as acquire above
                await self._bounded(release, None, after_fetch)
        return token

    async def _stored(self, rejected: AccessToken | None, deadline: float) -> AccessToken | None:
        token = await self._bounded(lambda: self._store.get(self._client_id), None, deadline)
        if token is None or not is_usable_token(token):
            return None
        if rejected is not None and token.token == rejected.token:
            return None
        if self._clock() >= _Schedule.of(token).refresh_at:
            return None  # due for renewal: the fetch under the lock renews it
        return token

    def _new_lock(self) -> TokenLock | None:
        try:
            return self._store.lock(self._client_id, self._lock_ttl)
        except Exception as error:  # a broken store is an outage, never a failure
            self._store_failed(error)
            return None

    async def _bounded(self, call: Callable[[], Awaitable[T]], fallback: T, deadline: float) -> T:
        """``call()``, by ``deadline`` (the loop's clock); on any failure the fallback (logged
        once per outage, never with the traceback: its frames hold the store's command
        arguments)."""
        try:
            async with asyncio.timeout_at(deadline):
                result = await call()
        except Exception as error:  # a broken store is an outage, never a failure
            self._store_failed(error)
            return fallback
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Nobody cancelled this task: the store raised CancelledError of its own.
            self._store_failed(cancelled)
            return fallback
        if self._store_down:
            self._store_down = False
            logger.warning("the token store answers again")
        return result

    def _store_resting(self) -> bool:
        """Whether the store failed so recently that a renewal does without it."""
        return self._store_down and time.monotonic() - self._store_failed_at < _STORE_REST

    def _store_failed(self, error: BaseException) -> None:
        self._store_failed_at = time.monotonic()
        if not self._store_down:
            self._store_down = True
            logger.warning(
                "the token store failed (%s); access tokens are fetched and kept in this "
                "process until it answers again",
                # redis-py's TimeoutError is not the builtin one: both read "timeout".
                "timeout" if "Timeout" in type(error).__name__ else type(error).__name__,
            )
