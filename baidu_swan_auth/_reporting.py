"""Reporting a call: each attempt to the DEBUG log, the ``on_attempt`` hook and an observer
(``_observe``), from one ``AttemptEvent``; and a call's observation, started and finished.

Nothing here may fail a call: a hook or an instrumentation that raises is logged and the call
goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from ._errors import ClientClosedError
from ._models import AttemptEvent
from ._observe import CallObservation, Observer
from ._operations import Operation

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._flight import Flight

__all__: list[str] = []

logger = logging.getLogger("baidu_swan_auth")


class Reporter:
    """Reports the attempts of one client's calls."""

    __slots__ = ("_warned_async_hook", "on_attempt")

    def __init__(self, on_attempt: Callable[[AttemptEvent], object] | None) -> None:
        self.on_attempt = on_attempt
        self._warned_async_hook = False

    def report(
        self,
        operation: Operation[Any, Any],
        shown: str,
        attempt: int,
        outcome: str,
        status: int | None,
        elapsed: float,
        error: str | None,
        reason: str,
        wait: float | None = None,
        observation: CallObservation | None = None,
    ) -> None:
        # Takes the request as it may be shown (a masked code): logger.exception below records
        # this frame's locals.
        if logger.isEnabledFor(logging.DEBUG):
            decision = f"retry in {wait:.3f}s" if wait is not None else f"done ({reason})"
            subject = operation.name
            if operation.label:
                subject = f"{subject} {operation.label}={shown}"
            logger.debug(
                "%s attempt=%d outcome=%s status=%s elapsed=%.3fs: %s",
                subject,
                attempt,
                outcome,
                status,
                elapsed,
                decision,
            )
        if self.on_attempt is None and observation is None:
            return
        event = AttemptEvent(
            code=shown,
            attempt=attempt,
            outcome=outcome,
            status=status,
            elapsed=elapsed,
            error=error,
            will_retry=wait is not None,
            retry_in=wait,
            reason=reason,
            operation=operation.name,
        )
        if observation is not None:
            try:
                observation.attempt(event)
            except Exception:
                instrumentation_failed("on an attempt")
        if self.on_attempt is None:
            return
        try:
            returned = self.on_attempt(event)
        except Exception:
            logger.exception("the on_attempt hook raised; the exchange goes on")
            return
        if inspect.iscoroutine(returned):
            returned.close()  # never awaited: close it rather than leak a warning per attempt
            if not self._warned_async_hook:
                self._warned_async_hook = True
                logger.warning("the on_attempt hook returned a coroutine, which is not awaited")


def start_observing(observer: Observer, operation: Operation[Any, Any]) -> CallObservation | None:
    """The call's observation; a failing instrumentation never fails the call."""
    try:
        url = operation.url
        return observer.start(operation.name, operation.api, url.host or "", url.port)
    except Exception:
        instrumentation_failed("to start a call")
        return None


def finished(observation: CallObservation, error: BaseException | None, attempts: int) -> None:
    try:
        observation.finish(error, attempts)
    except Exception:
        instrumentation_failed("to end a call")


def as_raised(error: BaseException, flight: Flight[Any]) -> BaseException:
    """The error as the caller will see it: a cancellation by ``aclose()`` becomes
    ``ClientClosedError`` once it leaves the engine (``_flight``)."""
    if isinstance(error, asyncio.CancelledError) and flight.closed_by_client:
        return ClientClosedError("the SwanAuthClient was closed during the call")
    return error


_failures_logged: set[str] = set()


def instrumentation_failed(what: str) -> None:
    """Log a failing instrumentation with its traceback once per kind of failure, then at DEBUG:
    it never fails a call, and must not fill the log with one traceback per call either."""
    if what in _failures_logged:
        logger.debug("the instrumentation failed %s again", what, exc_info=True)
        return
    _failures_logged.add(what)
    logger.exception(
        "the instrumentation failed %s; calls go on (further failures are logged at DEBUG)", what
    )
