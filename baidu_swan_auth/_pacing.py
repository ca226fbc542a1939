"""Pacing: a rate limit a bulk job imposes on every request it makes, retries included.

Below the client and the engine: a job sets ``current_pace`` in each call's task, and the engine
reads it on the retry path only, so a plain ``exchange()`` pays nothing for it. Pure asyncio: no
aiohttp, no session.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import time
from collections.abc import Awaitable, Callable

from ._errors import ConfigurationError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Paces requests evenly: at most ``rate`` per second, with no burst beyond one request.

    Requests are spaced ``1 / rate`` seconds apart (``aiolimiter.AsyncLimiter(rate, 1)``, by
    contrast, lets a whole second's worth through at once). Shared by every call of one job, so
    retries are paced too.

    Args:
        rate: Requests per second.
        clock: Seconds, monotonic (tests inject their own).
        sleep: Waits that many seconds (tests inject their own).
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ConfigurationError(f"rate must be a positive number, not {rate!r}")
        try:
            per_second = float(rate)
        except OverflowError:  # an int past any float
            per_second = math.inf
        if not math.isfinite(per_second) or not math.isfinite(1.0 / per_second):
            raise ConfigurationError(f"rate must be finite and above 0, not {rate!r}")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next_slot: float | None = None
        self._given_back: list[float] = []  # a heap of slots whose waiters were cancelled

    async def acquire(self) -> None:
        """Wait for the next free slot. A slot is taken at once, so waiters queue up fairly.

        A waiter cancelled before its slot comes gives the slot back, for the next caller: a
        limiter shared between jobs loses no pace to a job that stopped.
        """
        now = self._clock()
        slot = self._take_slot(now)
        if slot > now:
            try:
                await self._sleep(slot - now)
            except BaseException:
                self._give_back(slot)
                raise

    def _take_slot(self, now: float) -> float:
        while self._given_back and self._given_back[0] < now:
            heapq.heappop(self._given_back)  # its time passed unused
        if self._given_back:
            return heapq.heappop(self._given_back)
        slot = now if self._next_slot is None else max(now, self._next_slot)
        self._next_slot = slot + self.interval
        return slot

    def _give_back(self, slot: float) -> None:
        if self._next_slot == slot + self.interval:
            self._next_slot = slot  # the latest slot taken: as if it never was
        else:
            heapq.heappush(self._given_back, slot)


#: The pacing of the job the current task belongs to. The client reads it before each retry
#: (the slow path), so a plain ``exchange()`` pays nothing for it; each item's task has its own
#: copy of the context, set before the call.
current_pace: contextvars.ContextVar[RateLimiter | None] = contextvars.ContextVar(
    "baidu_swan_auth_pace", default=None
)
