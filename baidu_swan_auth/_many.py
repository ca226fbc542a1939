"""The machinery of ``exchange_many``: bounded concurrency, a job-wide pace, one outcome per input.

Below the client: it drives any ``exchange(code)`` coroutine function, so the client can offer
``exchange_many`` without importing the bulk features above it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

from . import _observe
from ._errors import ConfigurationError, SwanAuthError, TransportError
from ._models import Outcome, SessionKey
from ._pacing import RateLimiter, current_pace

__all__: list[str] = []

logger = logging.getLogger("baidu_swan_auth")

Exchange = Callable[[Any], Awaitable[SessionKey]]


def _split(item: Any) -> tuple[Any, Any]:
    """``(tag, code)`` from an input: a code alone, or a 2-tuple (or list) of tag and code."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    return None, item


async def _exchange_one(
    exchange: Exchange, item: Any, limiter: RateLimiter | None, sent: set[asyncio.Task[Any]]
) -> Outcome:
    tag, code = _split(item)
    if limiter is not None:
        current_pace.set(limiter)
        await limiter.acquire()  # before the call: the wait does not count against its timeout
    task = asyncio.current_task()
    if task is not None:
        sent.add(task)  # from here on the code may reach Baidu: a stop no longer cancels it
    try:
        return Outcome(code, tag, result=await exchange(code))
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
    exchange: Exchange,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 16,
    rate: float | RateLimiter | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Outcome, None]:
    """The machinery behind ``SwanAuthClient.exchange_many`` (see there), around any
    ``exchange(code)`` coroutine function.

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
    return _Stream(exchange, items, concurrency, limiter, stop).outcomes()


class _Stream:
    """One ``exchange_many`` run: reads inputs as room frees up, and hands back outcomes as
    calls finish, whichever comes first, so a slow input never holds back a finished call.

    Every future it waits for (the calls, the next input, the stop) reports to ``finished`` as it
    completes, so each turn of the loop waits for one future, not for all the calls in flight.
    """

    def __init__(
        self,
        exchange: Exchange,
        items: Iterable[Any] | AsyncIterable[Any],
        concurrency: int,
        limiter: RateLimiter | None,
        stop: asyncio.Event | None,
    ) -> None:
        self.exchange = exchange
        self.source = _inputs(items)
        self.concurrency = concurrency
        self.limiter = limiter
        self.stop = stop
        self.running: dict[asyncio.Task[Outcome], Any] = {}  # task -> its input
        self.sent: set[asyncio.Task[Any]] = set()
        self.next_input: asyncio.Future[Any] | None = None
        self.exhausted = False
        self.input_error: BaseException | None = None
        self.dropped_input: asyncio.Future[Any] | None = None  # cancelled by a stop, on purpose
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.wakeup: asyncio.Future[None] | None = None
        # Read once: a stream reports to the observer that was there when it started.
        self.observer = _observe.observer

    def _done(self, future: asyncio.Future[Any]) -> None:
        self.finished.append(future)
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def _read_more(self) -> None:
        if self.stop is not None and self.stop.is_set():
            self._stop_taking_input()
        if self.exhausted or self.next_input is not None or len(self.running) >= self.concurrency:
            return
        # Read ahead only as far as there is room: inputs are taken lazily, and memory holds at
        # most `concurrency` calls however long the input.
        self.next_input = asyncio.ensure_future(anext(self.source))
        self.next_input.add_done_callback(self._done)

    def _stop_taking_input(self) -> None:
        self.exhausted = True
        if self.next_input is not None:
            self.dropped_input = self.next_input
            self.next_input.cancel()
        for task in self.running:
            if task not in self.sent:
                task.cancel()  # still waiting for a rate slot: its code never left

    def _take_input(self, future: asyncio.Future[Any]) -> None:
        self.next_input = None
        if future.cancelled():
            if future is not self.dropped_input:
                # The input itself failed with a cancellation (it awaited something somebody
                # cancelled): an error like any other, not the end of the input.
                self.exhausted = True
                self.input_error = asyncio.CancelledError()
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
            task = asyncio.create_task(_exchange_one(self.exchange, item, self.limiter, self.sent))
            self.running[task] = item
            task.add_done_callback(self._done)
            if self.observer is not None:
                _observe_in_flight(self.observer, task)

    def _outcome_of(self, task: asyncio.Task[Outcome]) -> Outcome | None:
        item = self.running.pop(task)
        was_sent = task in self.sent
        self.sent.discard(task)
        if not task.cancelled():
            return task.result()
        if was_sent or self.stop is None or not self.stop.is_set():
            # Cancelled by someone else than a stop: that input still gets its one outcome, and
            # the job goes on.
            return _cancelled(item)
        return None  # dropped by a stop while it waited for a rate slot

    async def outcomes(self) -> AsyncGenerator[Outcome, None]:
        loop = asyncio.get_running_loop()
        if self.observer is not None and self.limiter is not None:
            with contextlib.suppress(Exception):  # instrumentation never fails a stream
                self.observer.pace(1.0 / self.limiter.interval)
        stopping = asyncio.ensure_future(self.stop.wait()) if self.stop is not None else None
        if stopping is not None:
            stopping.add_done_callback(self._done)
        try:
            while True:
                self._read_more()
                while self.finished:
                    future = self.finished.popleft()
                    if future is self.next_input:
                        self._take_input(future)
                        self._read_more()
                    elif future in self.running:
                        outcome = self._outcome_of(future)
                        if outcome is not None:
                            yield outcome
                        self._read_more()
                if not self.running and self.next_input is None:
                    break
                self.wakeup = loop.create_future()
                await self.wakeup
                self.wakeup = None
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


def _observe_in_flight(observer: _observe.Observer, task: asyncio.Task[Any]) -> None:
    """Count ``task`` in flight until it is done; instrumentation never fails a stream."""
    try:
        observer.in_flight(1)
    except Exception:
        logger.exception("the instrumentation failed to count a call in flight")
        return

    def done(_: asyncio.Task[Any]) -> None:
        try:
            observer.in_flight(-1)
        except Exception:
            logger.exception("the instrumentation failed to count a call in flight")

    task.add_done_callback(done)


def _cancelled(item: Any) -> Outcome:
    tag, code = _split(item)
    error = TransportError(
        "the call was cancelled before it finished; Baidu may have spent its code"
    )
    error.code_may_be_spent = True
    return Outcome(code, tag, error=error)
