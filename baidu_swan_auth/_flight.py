"""Single-flight and close-by-cancellation: the contract between concurrent calls of one client.

* **One request per code.** While a call for a code is under way (its *flight*), a second call
  with the same code does not send another request: it waits for the first one's result, within
  its own deadline. The request runs with the first caller's settings. Every waiter gets the
  result, or its own copy of the error.
* **The first caller owns the request.** If its task is cancelled (its own timeout, a framework
  dropping it), the request is abandoned: the waiters get ``TransportError`` ("the shared request
  ... was cancelled ... may have been spent"), and the cancellation goes on in the first caller.
* **aclose() cancels what is in flight.** It cancels the task of every call under way; each turns
  that into ``ClientClosedError`` (its waiters too), unless somebody else cancelled the same task,
  whose cancellation then wins (``Task.uncancel`` accounting, as ``asyncio.timeout`` does). aclose()
  waits a little for them to unwind, so their connections go back before the session closes.
* **A session closed under a call** (aiohttp cancels the calls queued for a pooled connection when
  their session closes) is ``ClientClosedError``, or ``UsageError`` for a session you passed.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from ._errors import ClientClosedError, ExchangeTimeoutError, SwanAuthError, TransportError
from ._transport import strip_frames

__all__: list[str] = []

T = TypeVar("T")


class Flight(Generic[T]):
    """One call under way, which concurrent calls with the same code join."""

    __slots__ = ("attempts", "closed_by_client", "task", "unwound", "waiters")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.attempts = 0
        self.waiters: list[asyncio.Future[T]] = []
        self.closed_by_client = False
        self.unwound: asyncio.Future[None] | None = None

    def succeed(self, result: T) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(result)
        self.waiters.clear()

    def fail(self, error: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                # Each waiter raises its own copy: one exception object raised in several tasks
                # would collect all their tracebacks.
                shared = copy.copy(error) if isinstance(error, SwanAuthError) else error
                waiter.set_exception(shared)
        self.waiters.clear()

    def abandon(self) -> None:
        """The first caller was cancelled: its waiters learn that the request was abandoned."""
        self.fail(
            TransportError(
                "the shared request for this code was cancelled by its first caller; "
                "the code may have been spent",
                attempts=self.attempts,
            )
        )

    def cancelled(
        self, cancelled: asyncio.CancelledError, session_closed_error: Callable[[], SwanAuthError]
    ) -> SwanAuthError | None:
        """The first caller's task was cancelled: what it raises instead (its waiters get a copy),
        or None to let the cancellation through (its waiters learn the request was abandoned)."""
        # The cancellation came through aiohttp's frames, which hold the request (and a proxy's
        # URL with its password): it leaves without them, whoever raises it next.
        strip_frames(cancelled)
        replacement = cancellation_error(self, session_closed_error)
        if replacement is None:
            self.abandon()
        else:
            self.fail(replacement)
        return replacement

    def finish(self) -> None:
        if self.unwound is not None:
            self.unwound.set_result(None)


async def flown(
    flights: dict[object, Flight[Any]],
    flight: Flight[T],
    call: Awaitable[T],
    session_closed_error: Callable[[], SwanAuthError],
) -> T:
    """Await ``call`` as ``flight``, which nobody joins: listed in ``flights`` while it runs, so
    that aclose() interrupts it, and with the same cancellation rules as an exchange."""
    key = object()
    flights[key] = flight
    try:
        return await call
    except asyncio.CancelledError as cancelled:
        replacement = flight.cancelled(cancelled, session_closed_error)
        if replacement is None:
            raise
        raise replacement from None
    finally:
        del flights[key]
        flight.finish()


async def join(flight: Flight[T], seconds: float) -> T:
    """Wait for the result of ``flight``, at most ``seconds``."""
    waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    flight.waiters.append(waiter)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await waiter
    except TimeoutError:
        if deadline.expired():
            raise ExchangeTimeoutError(
                "the deadline passed while waiting for a shared exchange of the same code"
            ) from None
        raise


def cancellation_error(
    flight: Flight[Any], session_closed_error: Callable[[], SwanAuthError]
) -> SwanAuthError | None:
    """What a cancelled call raises instead, or None to let the cancellation through."""
    task = flight.task
    if flight.closed_by_client:
        if task is not None and task.uncancel() > 0:
            return None  # somebody else cancelled the task as well
        closed = ClientClosedError(
            "the SwanAuthClient was closed during the call", attempts=flight.attempts
        )
        closed.code_may_be_spent = flight.attempts > 0  # a request may have gone out
        return closed
    if task is not None and task.cancelling() == 0:
        # Nobody cancelled the task: aiohttp cancels the calls queued for a pooled connection
        # when their session is closed under them.
        return session_closed_error()
    return None


async def interrupt(flights: Iterable[Flight[Any]], loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks running ``flights`` (they turn it into ``ClientClosedError``) and wait
    a little for them to unwind, so their connections go back before the session closes."""
    current = asyncio.current_task()
    unwinding: list[asyncio.Future[None]] = []
    for flight in list(flights):
        task = flight.task
        if task is None or task is current or task.done():
            continue
        flight.closed_by_client = True
        flight.unwound = loop.create_future()
        unwinding.append(flight.unwound)
        task.cancel()
    if unwinding:
        await asyncio.wait(unwinding, timeout=5.0)
