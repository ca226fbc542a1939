"""The engine: one attempt-and-retry loop for every call to Baidu.

A call runs an operation (``_operations``) against the session: the first attempt pays for no retry
bookkeeping; after a failure the loop asks the policy (``_retry``) whether and when to try again,
within the call's deadline, ``max_attempts``, ``Retry-After``, the retry budget and a bulk job's
pace, and reports every attempt to the ``on_attempt`` hook and the DEBUG log. The loop knows of
single-use codes only through the operation's ``spends_code``: ``invalid_grant`` after an attempt
that may have reached Baidu then becomes ``CodeConsumedError``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiohttp.payload import BytesPayload

from . import _observe
from ._errors import (
    ClientClosedError,
    CodeConsumedError,
    ConfigurationError,
    InvalidCodeError,
    SwanAuthError,
    TransportError,
)
from ._models import AttemptEvent
from ._observe import CallObservation
from ._operations import Operation
from ._pacing import current_pace
from ._protocol import FORM_CONTENT_TYPE, AttemptFailure, read_capped_body
from ._reporting import Reporter, as_raised, finished, start_observing
from ._retry import Disposition, RetryBudget, backoff_wait
from ._settings import checked_attempts, positive_number
from ._transport import detach_cause, transport_failure

if TYPE_CHECKING:
    from tenacity.wait import wait_base

    from ._flight import Flight

__all__: list[str] = []

logger = logging.getLogger("baidu_swan_auth")

T = TypeVar("T")
AttemptHook = Callable[[AttemptEvent], object]
#: ``Engine.run``'s default: observe the call with the installed observer, if any.
FROM_OBSERVER: Any = object()
Sleep = Callable[[float], Awaitable[object]]


class Engine:
    """Runs calls: attempts, retries, deadlines and their reports. One per client."""

    def __init__(
        self,
        *,
        max_attempts: int,
        timeout: float,
        connect_timeout: float,
        read_timeout: float,
        max_retry_after: float,
        backoff: wait_base,
        budget: RetryBudget,
        sleep: Sleep,
        on_attempt: AttemptHook | None,
        session_closed_error: Callable[[], SwanAuthError],
    ) -> None:
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retry_after = max_retry_after
        self.backoff = backoff
        self.budget = budget
        self.sleep = sleep
        self.on_attempt = on_attempt
        self.session_closed_error = session_closed_error
        self.closed = False  # set by the client's aclose(): no retry starts after it
        self.reporter = Reporter(on_attempt)
        self._warned_backoff = False
        # Constant per client: the first attempt of a call with the default timeout reuses it.
        self.first_attempt_timeout = self.attempt_timeout(timeout)

    def settings_for(
        self, timeout: float | None, max_attempts: int | None
    ) -> tuple[float, aiohttp.ClientTimeout, int]:
        """One call's deadline, first attempt timeout and attempts, from its own settings."""
        if timeout is None:
            seconds, first_attempt = self.timeout, self.first_attempt_timeout
        else:
            seconds = positive_number("timeout", timeout)
            first_attempt = self.attempt_timeout(seconds)
        attempts = self.max_attempts if max_attempts is None else checked_attempts(max_attempts)
        return seconds, first_attempt, attempts

    def attempt_timeout(self, remaining: float) -> aiohttp.ClientTimeout:
        # total bounds the attempt by the call's deadline (the pool wait included);
        # sock_connect and sock_read bound the network, never the wait for a pooled connection.
        return aiohttp.ClientTimeout(
            total=remaining,
            sock_connect=min(self.connect_timeout, remaining),
            sock_read=min(self.read_timeout, remaining),
            # aiohttp rounds timeouts over ceil_threshold (5 s) up to a whole second of the
            # loop's clock, which let a slow answer run up to a second past the deadline.
            ceil_threshold=math.inf,
        )

    async def run(
        self,
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop,
        operation: Operation[Any, T],
        request: Any,
        flight: Flight[T],
        timeout: float,
        attempt_timeout: aiohttp.ClientTimeout,
        max_attempts: int,
        observation: Any = FROM_OBSERVER,
    ) -> T:
        """Run ``request`` through ``operation`` until it succeeds or the policy says stop;
        ``timeout`` and ``max_attempts`` are checked already, ``attempt_timeout`` is the first
        attempt's. ``observation`` is the call's, when its caller started it (a v2 call that
        waited for a token); by default the installed observer's, if any."""
        started = attempt_started = loop.time()
        self.budget.deposit()
        flight.attempts = attempt = 1
        may_have_spent = renewed = False
        if observation is FROM_OBSERVER:
            observer = _observe.observer
            observation = None if observer is None else start_observing(observer, operation)
        try:
            while True:
                try:
                    result = await self._attempt(session, operation, request, attempt_timeout)
                except AttemptFailure as caught:
                    failure = caught
                else:
                    if (
                        observation is not None
                        or self.on_attempt is not None
                        or logger.isEnabledFor(logging.DEBUG)
                    ):
                        elapsed = loop.time() - attempt_started
                        shown = operation.shown(request)
                        self.reporter.report(
                            operation, shown, attempt, "ok", 200, elapsed, None, "success",
                            None, observation,
                        )
                        if observation is not None:
                            finished(observation, None, attempt)
                    return result
                # From here on, the slow path: a retry's bookkeeping. Outside the except block, so
                # the error the call raises does not drag the AttemptFailure (and the frames that
                # parsed Baidu's answer) along as its __context__.
                now = loop.time()
                elapsed = now - attempt_started
                may_have_spent |= failure.disposition is Disposition.AMBIGUOUS
                deadline = started + timeout
                renewal = None if renewed else self._renewal(operation, request, failure, deadline)
                renewed |= renewal is not None
                reason, wait = (
                    ("token_rejected", 0.0)
                    if renewal is not None
                    else self._plan_retry(failure, attempt, max_attempts, deadline - now, elapsed)
                )
                self.reporter.report(
                    operation,
                    operation.shown(request),
                    attempt,
                    _outcome(failure.error),
                    failure.status,
                    elapsed,
                    getattr(failure.error, "error", None),
                    reason,
                    wait,
                    observation,
                )
                if wait is None:
                    raise self._final_error(operation, failure, attempt, may_have_spent)
                if renewal is not None:
                    request = await _renewed(renewal, attempt, may_have_spent)
                    max_attempts += 1
                else:
                    await self._wait_to_retry(
                        wait, deadline, operation, failure, attempt, may_have_spent
                    )
                attempt_started = loop.time()
                remaining = deadline - attempt_started
                if remaining <= 0:
                    raise self._final_error(operation, failure, attempt, may_have_spent)
                attempt += 1
                flight.attempts = attempt
                attempt_timeout = self.attempt_timeout(remaining)
        except BaseException as error:
            if observation is not None:
                finished(observation, as_raised(error, flight), flight.attempts)
            raise

    @staticmethod
    def observe(operation: Operation[Any, Any]) -> CallObservation | None:
        """A call's observation, started ahead of ``run()`` (which then takes it)."""
        observer = _observe.observer
        return None if observer is None else start_observing(observer, operation)

    @staticmethod
    def unobserve(
        observation: CallObservation | None, error: BaseException, flight: Flight[Any]
    ) -> None:
        """End an observation ``run()`` never took: the call failed before it."""
        if observation is not None:
            finished(observation, as_raised(error, flight), flight.attempts)

    @staticmethod
    def _renewal(
        operation: Operation[Any, T], request: Any, failure: AttemptFailure, deadline: float
    ) -> Awaitable[Any] | None:
        """When Baidu refused the access token before the service saw the request: the request
        with a fresh one, for one more attempt at once, outside max_attempts and the budget."""
        if not failure.stale_token:
            return None
        return operation.renewed(request, deadline - asyncio.get_running_loop().time())

    async def _wait_to_retry(
        self,
        wait: float,
        deadline: float,
        operation: Operation[Any, Any],
        failure: AttemptFailure,
        attempt: int,
        may_have_spent: bool,
    ) -> None:
        await self._pause(wait)
        if self.closed:
            raise ClientClosedError(
                "the SwanAuthClient was closed during the call", attempts=attempt
            )
        pace = current_pace.get()
        if pace is not None:  # a bulk job's rate limit counts retries too
            try:
                async with asyncio.timeout_at(deadline):
                    await pace.acquire()
            except TimeoutError:
                raise self._final_error(operation, failure, attempt, may_have_spent) from None

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        operation: Operation[Any, T],
        request: Any,
        timeout: aiohttp.ClientTimeout,
    ) -> T:
        payload = BytesPayload(operation.body(request), content_type=FORM_CONTENT_TYPE)
        try:
            # Awaited rather than `async with`: the context manager's two extra coroutine frames
            # would be resumed on every wake-up of every call; release() in finally does the same.
            response = await session.post(
                operation.url, data=payload, timeout=timeout, allow_redirects=False
            )
            try:
                status = response.status
                headers = response.headers
                body = await read_capped_body(response)
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error, disposition = transport_failure(exc)
            # What aiohttp said, for whoever debugs the network, without the frames that hold
            # the request body and without any echo of the secret or the code.
            error.__cause__ = detach_cause(exc, operation.redactor(request))
            raise AttemptFailure(error, disposition) from None
        except RuntimeError as exc:
            if session.closed:
                raise AttemptFailure(self.session_closed_error(), Disposition.FINAL) from None
            raise AttemptFailure(
                TransportError(f"request to Baidu failed ({type(exc).__name__})"),
                Disposition.FINAL,
            ) from None
        return operation.interpret(status, headers, body, request)

    def _plan_retry(
        self,
        failure: AttemptFailure,
        attempt: int,
        max_attempts: int,
        remaining: float,
        last_attempt_took: float,
    ) -> tuple[str, float | None]:
        """Why the call stops (and None), or ``("retrying", seconds to wait)``.

        A retry is expected to take as long as the attempt before it; one that could not finish
        before the deadline is not started.
        """
        if failure.disposition is Disposition.FINAL:
            return "final", None
        if self.closed:
            return "closed", None
        if attempt >= max_attempts:
            return "attempts", None
        wait: float | None
        if failure.retry_after is not None:
            if failure.retry_after > self.max_retry_after:
                return "retry_after_cap", None
            wait = failure.retry_after
        else:
            wait = backoff_wait(self.backoff, attempt, failure.error)
            if wait is None:
                self._warn_once_about_backoff()
                return "backoff", None
        if wait + last_attempt_took >= remaining:
            return "deadline", None
        if not self.budget.try_withdraw():
            return "budget", None
        return "retrying", wait

    def _pause(self, seconds: float) -> Awaitable[object]:
        waiting = self.sleep(seconds)
        if not inspect.isawaitable(waiting):
            raise ConfigurationError(
                f"sleep must return an awaitable (an async def function), not "
                f"{type(waiting).__name__}"
            )
        return waiting

    def _warn_once_about_backoff(self) -> None:
        if not self._warned_backoff:
            self._warned_backoff = True
            logger.warning(
                "the backoff strategy raised or gave no finite wait of 0 s or more; "
                "calls that need it are not retried"
            )

    @staticmethod
    def _final_error(
        operation: Operation[Any, Any],
        failure: AttemptFailure,
        attempts: int,
        may_have_spent: bool,
    ) -> Exception:
        error = failure.error
        if operation.spends_code and may_have_spent and type(error) is InvalidCodeError:
            error = CodeConsumedError(
                "Baidu says the code is invalid after an earlier attempt of this call may have "
                "reached it: that attempt most likely spent the code; ask the user to log in again",
                error=error.error,
                description=error.description,
                status=error.status,
            )
        if isinstance(error, SwanAuthError):
            error.attempts = attempts
            error.code_may_be_spent = may_have_spent or failure.disposition is Disposition.AMBIGUOUS
        return error


async def _renewed(renewal: Awaitable[T], attempt: int, may_have_spent: bool) -> T:
    """The request with a fresh token; a failure to get one ends the call."""
    try:
        return await renewal
    except SwanAuthError as error:
        error.attempts = attempt
        error.code_may_be_spent = may_have_spent
        raise error from None


def _outcome(error: Exception) -> str:
    kind: str = getattr(error, "kind", "error")
    return kind
