"""What is worth retrying, how long to wait, and how many retries a client may spend.

A login code is single-use, so every failure falls in one of three classes:

* **safe**: Baidu did not process the request for sure (connection refused, DNS, connect
  timeout, 429, 503, ``slow_down``). Retrying cannot spend the code twice.
* **ambiguous**: the request may have reached Baidu (read timeout, dropped or reset connection,
  truncated body, any 5xx but 503). Retrying is worth it, but an ``invalid_grant`` afterwards most
  likely means that earlier attempt spent the code: the call raises ``CodeConsumedError``.
* **final**: everything else. Retrying cannot help (or would re-send the secret somewhere else).

The policy is pure: no aiohttp, no session. Which failure is which class is decided on the wire
(``_transport`` for the network's, ``_answers`` for Baidu's); the engine applies the policy.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._errors import (
    ConfigurationError,
)

if TYPE_CHECKING:
    from tenacity.wait import wait_base

__all__ = ["RetryBudget"]


class Disposition(enum.Enum):
    """Whether a failed attempt may be retried, and whether it may have spent the code."""

    FINAL = "final"
    SAFE = "safe"
    AMBIGUOUS = "ambiguous"


def default_backoff() -> wait_base:
    """Exponential backoff with jitter: about 0.1 s, 0.2 s, 0.4 s, ... capped at 2 s."""
    # tenacity is imported where a retry needs it, not with the package: a call that succeeds
    # at once never pays for it, and neither does `import baidu_swan_auth`.
    from tenacity import wait_exponential, wait_random  # noqa: PLC0415

    return wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1)


def backoff_wait(backoff: wait_base, attempt: int, error: BaseException) -> float | None:
    """The pause ``backoff`` asks for after failed ``attempt`` (1 for the first), or None when
    it gives no usable one: it raised, or returned something other than a finite number >= 0.

    None means "do not retry": a NaN wait once made a call sleep past its deadline.
    """
    from tenacity import RetryCallState, Retrying  # noqa: PLC0415

    # tenacity's strategies read the attempt number and the failed outcome from a RetryCallState,
    # which must name a retrying object; the client runs its own loop, so a stand-in does.
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(error), error, error.__traceback__))
    try:
        wait = backoff(state)
    except Exception:
        return None
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        return None
    try:
        seconds = float(wait)
    except OverflowError:  # an int past any float
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


_SAFE_STATUSES = frozenset({429, 503})


def disposition_of_status(status: int) -> Disposition:
    """How a 429 or 5xx answer is judged, whatever its body says."""
    if status in _SAFE_STATUSES:
        return Disposition.SAFE
    return Disposition.AMBIGUOUS


#: Shorter windows make the slot arithmetic overflow (``ttl=1e-320``) and mean nothing anyway.
_SHORTEST_TTL = 0.001


def _check_setting(name: str, value: object, *, smallest: float) -> None:
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past any float
            number = math.inf
    if not math.isfinite(number) or number < smallest:
        raise ConfigurationError(
            f"RetryBudget {name} must be a finite number of at least {smallest:g}, not {value!r}"
        )


class RetryBudget:
    """Caps retries to a share of recent traffic, so an outage is not multiplied by retries.

    The scheme is Finagle's ``RetryBudget``: every first attempt deposits ``percent_can_retry`` of a
    retry, a reserve of ``min_retries_per_second`` retries per second is always there, and deposits
    and withdrawals expire after ``ttl`` seconds (to ``ttl * 1.1``: they are counted in slots of
    ``ttl / 10``). So within any ``ttl`` seconds, retries stay within
    ``min_retries_per_second * ttl + percent_can_retry * first attempts of those seconds``.

    One budget belongs to one client by default; pass the same instance to several clients to
    share it. Not thread-safe: use it from one event loop.
    """

    # Ten slots of ttl/10 plus the current, partly elapsed one: any two events less than ttl
    # apart see each other, so no window of ttl seconds holds more than the budget allows.
    _SLOTS = 11

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        min_retries_per_second: float = 10.0,
        percent_can_retry: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_setting("ttl", ttl, smallest=_SHORTEST_TTL)
        _check_setting("min_retries_per_second", min_retries_per_second, smallest=0.0)
        _check_setting("percent_can_retry", percent_can_retry, smallest=0.0)
        if not callable(clock):
            raise ConfigurationError(f"clock must be callable, not {type(clock).__name__}")
        self._settings = (ttl, min_retries_per_second, percent_can_retry)
        self._slot_width = ttl / (self._SLOTS - 1)
        self._reserve = min_retries_per_second * ttl
        if not math.isfinite(self._reserve):
            raise ConfigurationError("RetryBudget min_retries_per_second * ttl must be finite")
        self._percent = percent_can_retry
        self._clock = clock
        self._deposits = [0] * self._SLOTS
        self._withdrawals = [0] * self._SLOTS
        self._slot = self._now_slot()

    def _now_slot(self) -> int:
        now = self._clock()
        try:
            return int(now / self._slot_width)
        except (TypeError, ValueError, OverflowError):
            raise ConfigurationError(
                f"the RetryBudget's clock must return finite seconds, not {now!r}"
            ) from None

    def _advance(self) -> int:
        slot = self._now_slot()
        if slot != self._slot:
            for expired in range(self._slot + 1, min(slot, self._slot + self._SLOTS) + 1):
                index = expired % self._SLOTS
                self._deposits[index] = 0
                self._withdrawals[index] = 0
            self._slot = slot
        return slot % self._SLOTS

    def deposit(self) -> None:
        """Record a first attempt."""
        self._deposits[self._advance()] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        index = self._advance()
        balance = self._reserve + self._percent * sum(self._deposits) - sum(self._withdrawals)
        if balance < 1:
            return False
        self._withdrawals[index] += 1
        return True

    def __repr__(self) -> str:
        ttl, reserve_rate, percent = self._settings
        return (
            f"<RetryBudget ttl={ttl!r} min_retries_per_second={reserve_rate!r} "
            f"percent_can_retry={percent!r} balance={self.balance:.1f}>"
        )

    @property
    def balance(self) -> float:
        """Retries available right now."""
        self._advance()
        return self._reserve + self._percent * sum(self._deposits) - sum(self._withdrawals)
