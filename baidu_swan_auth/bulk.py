"""Many codes at once: bounded concurrency, a job-wide rate limit, one outcome per input.

[`SwanAuthClient.exchange_many`][baidu_swan_auth.SwanAuthClient.exchange_many] is the entry
point; this module holds its machinery and the [`Outcome`][baidu_swan_auth.bulk.Outcome] it yields.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
)
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import (
    ApiError,
    CodeConsumedError,
    ConfigurationError,
    SwanAuthError,
    TransportError,
)
from ._models import SessionKey, mask_code

if TYPE_CHECKING:
    from ._client import SwanAuthClient

__all__ = ["Outcome", "RateLimiter", "error_label"]


@attrs.frozen(repr=False)
class Outcome:
    """What became of one input of ``exchange_many``: a result or an error, never both.

    Attributes:
        code: The code as it was given.
        tag: The tag given with it (``(tag, code)`` pairs), else None.
        result: The ``SessionKey`` when the exchange succeeded.
        error: The ``SwanAuthError`` when it failed.
    """

    code: Any
    tag: Any = None
    result: SessionKey | None = None
    error: SwanAuthError | None = None

    @property
    def ok(self) -> bool:
        """Whether the exchange succeeded."""
        return self.error is None

    def __repr__(self) -> str:
        code = mask_code(self.code) if isinstance(self.code, str) else type(self.code).__name__
        shown = f"result={self.result!r}" if self.error is None else f"error={self.error!r}"
        return f"Outcome(code={code!r}, tag={self.tag!r}, {shown})"


def error_label(error: SwanAuthError) -> str:
    """A stable name for a failure: Baidu's error string for Baidu's refusals, else the kind.

    ``invalid_grant``, ``invalid_client`` or an unknown string as Baidu sent it; ``code_consumed``,
    ``unavailable``, ``transport``, ``timeout``, ``response``, ``invalid_input`` and so on for the
    rest (a 503 carrying an error body is ``unavailable``, whatever the body says).
    """
    if isinstance(error, ApiError) and not isinstance(error, CodeConsumedError) and error.error:
        return error.error
    return error.kind


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


def _split(item: Any) -> tuple[Any, Any]:
    """``(tag, code)`` from an input: a code alone, or a 2-tuple (or list) of tag and code."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    return None, item


async def _exchange_one(
    client: SwanAuthClient, item: Any, limiter: RateLimiter | None, sent: set[asyncio.Task[Any]]
) -> Outcome:
    tag, code = _split(item)
    if limiter is not None:
        current_pace.set(limiter)
        await limiter.acquire()  # before the call: the wait does not count against its timeout
    task = asyncio.current_task()
    if task is not None:
        sent.add(task)  # from here on the code may reach Baidu: a stop no longer cancels it
    try:
        return Outcome(code, tag, result=await client.exchange(code))
    except SwanAuthError as error:
        return Outcome(code, tag, error=error)
    except Exception as unexpected:  # an SDK bug must not lose the input's outcome
        wrapped = SwanAuthError(f"unexpected failure ({type(unexpected).__name__})")
        wrapped.__cause__ = unexpected
        return Outcome(code, tag, error=wrapped)


async def _inputs(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def exchange_many(
    client: SwanAuthClient,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 16,
    rate: float | RateLimiter | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Outcome, None]:
    """The machinery behind ``SwanAuthClient.exchange_many`` (see there).

    Settings are checked here, at the call, rather than at the first iteration. ``stop``, for
    the bulk command: once set, no more input is taken, and inputs still waiting for a rate slot
    are dropped without an outcome (their codes never left); calls already sent finish.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an int of at least 1, not {concurrency!r}")
    if not isinstance(items, Iterable | AsyncIterable):
        raise ConfigurationError(f"items must be iterable, not {type(items).__name__}")
    if isinstance(items, str | bytes | bytearray | memoryview):
        # Iterable, so it would pass the check above and be exchanged one character (or byte
        # value) at a time. The value itself stays out of the message: it is likely a code.
        raise ConfigurationError(
            f"items is a single {type(items).__name__}, not a collection of codes: pass a list "
            "of codes, e.g. [code], or call client.exchange(code) for one"
        )
    limiter = rate if isinstance(rate, RateLimiter) or rate is None else RateLimiter(rate)
    return _Stream(client, items, concurrency, limiter, stop).outcomes()


class _Stream:
    """One ``exchange_many`` run: reads inputs as room frees up, and hands back outcomes as
    calls finish, whichever comes first, so a slow input never holds back a finished call."""

    def __init__(
        self,
        client: SwanAuthClient,
        items: Iterable[Any] | AsyncIterable[Any],
        concurrency: int,
        limiter: RateLimiter | None,
        stop: asyncio.Event | None,
    ) -> None:
        self.client = client
        self.source = _inputs(items)
        self.concurrency = concurrency
        self.limiter = limiter
        self.stop = stop
        self.running: dict[asyncio.Task[Outcome], Any] = {}  # task -> its input
        self.sent: set[asyncio.Task[Any]] = set()
        self.next_input: asyncio.Future[Any] | None = None
        self.exhausted = False
        self.input_error: BaseException | None = None

    def _read_more(self) -> None:
        if self.stop is not None and self.stop.is_set():
            self._stop_taking_input()
        if self.exhausted or self.next_input is not None or len(self.running) >= self.concurrency:
            return
        # Read ahead only as far as there is room: inputs are taken lazily, and memory holds at
        # most `concurrency` calls however long the input.
        self.next_input = asyncio.ensure_future(anext(self.source))

    def _stop_taking_input(self) -> None:
        self.exhausted = True
        if self.next_input is not None:
            self.next_input.cancel()
        for task in self.running:
            if task not in self.sent:
                task.cancel()  # still waiting for a rate slot: its code never left

    def _take_input(self, future: asyncio.Future[Any]) -> None:
        self.next_input = None
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, StopAsyncIteration):
            self.exhausted = True
        elif error is not None:
            # Raised once the calls already under way are done and their outcomes handed back.
            self.exhausted = True
            self.input_error = error
        else:
            item = future.result()
            task = asyncio.create_task(_exchange_one(self.client, item, self.limiter, self.sent))
            self.running[task] = item

    async def outcomes(self) -> AsyncGenerator[Outcome, None]:
        stopping = asyncio.ensure_future(self.stop.wait()) if self.stop is not None else None
        try:
            while True:
                self._read_more()
                waiting: set[asyncio.Future[Any]] = set(self.running)
                if self.next_input is not None:
                    waiting.add(self.next_input)
                if not waiting:
                    break
                if stopping is not None and not stopping.done():
                    waiting.add(stopping)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self.next_input is not None and self.next_input in done:
                    self._take_input(self.next_input)
                for task in [task for task in done if task in self.running]:
                    item = self.running.pop(task)
                    was_sent = task in self.sent
                    self.sent.discard(task)
                    if not task.cancelled():
                        yield task.result()
                    elif was_sent or self.stop is None or not self.stop.is_set():
                        # Cancelled by someone else than a stop: that input still gets its one
                        # outcome, and the job goes on.
                        yield _cancelled(item)
            if self.input_error is not None:
                raise self.input_error
        finally:
            await self._abandon(stopping)

    async def _abandon(self, stopping: asyncio.Future[Any] | None) -> None:
        # The consumer stopped early (break, aclose, cancellation) or the input failed:
        # nobody waits for these any more.
        if stopping is not None:
            stopping.cancel()
        pending = [*self.running, *([self.next_input] if self.next_input is not None else [])]
        for future in pending:
            future.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.source.aclose()


def _cancelled(item: Any) -> Outcome:
    tag, code = _split(item)
    error = TransportError(
        "the call was cancelled before it finished; Baidu may have spent its code"
    )
    error.code_may_be_spent = True
    return Outcome(code, tag, error=error)
