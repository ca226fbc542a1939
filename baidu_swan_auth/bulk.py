"""Many codes at once: bounded concurrency, a job-wide rate limit, one outcome per input.

[`SwanAuthClient.exchange_many`][baidu_swan_auth.SwanAuthClient.exchange_many] is the entry
point; this module is the public home of the [`Outcome`][baidu_swan_auth.bulk.Outcome] it yields,
the [`RateLimiter`][baidu_swan_auth.bulk.RateLimiter] it accepts, and the labels the bulk command
writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from ._errors import ApiError, CodeConsumedError, SwanAuthError
from ._many import exchange_many as _exchange_many
from ._models import Outcome
from ._pacing import RateLimiter

if TYPE_CHECKING:
    from ._client import SwanAuthClient

__all__ = ["Outcome", "RateLimiter", "error_label"]


def error_label(error: SwanAuthError) -> str:
    """A stable name for a failure: Baidu's error string for Baidu's refusals, else the kind.

    ``invalid_grant``, ``invalid_client`` or an unknown string as Baidu sent it; ``code_consumed``,
    ``unavailable``, ``transport``, ``timeout``, ``response``, ``invalid_input`` and so on for the
    rest (a 503 carrying an error body is ``unavailable``, whatever the body says).
    """
    if isinstance(error, ApiError) and not isinstance(error, CodeConsumedError) and error.error:
        return error.error
    return error.kind


def exchange_many(
    client: SwanAuthClient,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 16,
    rate: float | RateLimiter | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Outcome, None]:
    """``client.exchange_many``, with the ``stop`` event the bulk command needs: once set, no
    more input is taken, and inputs still waiting for a rate slot are dropped without an outcome
    (their codes never left); calls already sent finish."""
    return _exchange_many(client.exchange, items, concurrency=concurrency, rate=rate, stop=stop)
