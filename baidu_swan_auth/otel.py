"""OpenTelemetry traces and metrics for every call the SDK makes to Baidu.

```python
from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor

BaiduSwanAuthInstrumentor().instrument()  # once, at startup, after the providers are set
```

It needs the ``otel`` extra (``pip install 'baidu-swan-auth[otel]'``): the OpenTelemetry API and
its instrumentation base, never the SDK, whose pipeline (exporters, sampling) is the
application's to configure. Like every OpenTelemetry instrumentor it is one per process:
``instrument()`` turns it on for every client, ``uninstrument()`` off. Off, or not installed,
it costs the SDK nothing: ``import baidu_swan_auth`` imports no OpenTelemetry module, and a call
reads one module attribute to learn that nobody observes it.

What it records (the how-to has the whole table):

* **A span per call**, ``baidu_swan_auth exchange`` / ``token`` / ``unionid``, the parent of the
  HTTP spans ``opentelemetry-instrumentation-aiohttp-client`` makes for its attempts, with the
  API, the attempts, the outcome (``SwanAuthError.kind``), ``error.type`` on failure,
  ``server.address`` / ``server.port`` and the last ``http.response.status_code``; each retry is
  an event with its reason and its wait.
* **Metrics**: calls by operation, API and outcome; call duration; attempts; retries by reason;
  retry-budget refusals; token fetches and rejections; a bulk stream's calls in flight and pace.

Never a login code, openid, session key, token or secret in an attribute, an event or a metric
label; labels use ``kind``, never Baidu's own error text, whose values have no bound.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from . import _observe
from ._errors import MissingDependencyError, SwanAuthError
from ._models import AttemptEvent
from ._version import __version__

try:
    from opentelemetry import context, metrics, trace
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )
except ImportError as _missing:
    raise MissingDependencyError(
        "OpenTelemetry instrumentation needs the 'otel' extra: "
        "pip install 'baidu-swan-auth[otel]'",
        package="opentelemetry-api",
    ) from _missing

__all__ = ["BaiduSwanAuthInstrumentor"]

_SCOPE = "baidu_swan_auth"
_PREFIX = "baidu_swan_auth"
#: Seconds: a login exchange takes tens of milliseconds; a retried one, seconds; the default
#: deadline is ten.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BaiduSwanAuthInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces and metrics for every ``SwanAuthClient`` of the process.

    ``instrument(tracer_provider=..., meter_provider=...)`` takes the providers to use (the
    global ones by default); ``uninstrument()`` stops. Calls already under way finish as they
    started.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(_SCOPE, __version__, kwargs.get("tracer_provider"))
        meter = metrics.get_meter(_SCOPE, __version__, kwargs.get("meter_provider"))
        _observe.observer = _OpenTelemetryObserver(tracer, meter)

    def _uninstrument(self, **kwargs: Any) -> None:
        _observe.observer = None


class _Instruments:
    """The metric instruments, made once per ``instrument()``."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.calls = meter.create_counter(
            f"{_PREFIX}.calls", unit="{call}", description="Calls to Baidu, by outcome"
        )
        self.duration = meter.create_histogram(
            f"{_PREFIX}.call.duration",
            unit="s",
            description="Duration of calls to Baidu, retries and waits included",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.attempts = meter.create_counter(
            f"{_PREFIX}.attempts", unit="{attempt}", description="HTTP attempts, by outcome"
        )
        self.retries = meter.create_counter(
            f"{_PREFIX}.retries", unit="{retry}", description="Retries, by the failure retried"
        )
        self.budget_refusals = meter.create_counter(
            f"{_PREFIX}.retry_budget.refusals",
            unit="{retry}",
            description="Retries the retry budget refused",
        )
        self.token_fetches = meter.create_counter(
            f"{_PREFIX}.token.fetches",
            unit="{fetch}",
            description="Access token fetches, by outcome",
        )
        self.token_rejections = meter.create_counter(
            f"{_PREFIX}.token.rejections",
            unit="{rejection}",
            description="Access tokens Baidu's gateway refused (110, 111)",
        )
        self.in_flight = meter.create_up_down_counter(
            f"{_PREFIX}.bulk.in_flight", unit="{call}", description="Bulk calls under way"
        )
        self.pace = meter.create_gauge(
            f"{_PREFIX}.bulk.pace",
            unit="{request}/s",
            description="The rate limit of a bulk stream",
        )


class _OpenTelemetryObserver:
    """The ``_observe.Observer`` that turns calls into spans and metrics."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self.tracer = tracer
        self.instruments = _Instruments(meter)
        # Metric attributes come from small fixed sets: each combination is built once, not
        # once per call.
        self._labels: dict[tuple[str, ...], dict[str, str]] = {}

    def labels(self, *pairs: str) -> dict[str, str]:
        """The attributes ``{pairs[0]: pairs[1], ...}``, shared between calls (never mutated)."""
        labels = self._labels.get(pairs)
        if labels is None:
            labels = self._labels[pairs] = dict(zip(pairs[::2], pairs[1::2], strict=True))
        return labels

    def start(self, operation: str, api: str, host: str, port: int | None) -> _CallSpan:
        return _CallSpan(self, operation, api, host, port)

    def in_flight(self, delta: int) -> None:
        self.instruments.in_flight.add(delta)

    def pace(self, rate: float) -> None:
        self.instruments.pace.set(rate)


_OPERATION = f"{_PREFIX}.operation"
_API = f"{_PREFIX}.api"
_OUTCOME = f"{_PREFIX}.outcome"
_REASON = f"{_PREFIX}.retry.reason"


class _CallSpan:
    """One call: its span, current while the call runs (so HTTP spans are its children), and
    its metrics when it ends."""

    __slots__ = ("_api", "_observer", "_operation", "_started", "_status", "_token", "span")

    def __init__(
        self,
        observer: _OpenTelemetryObserver,
        operation: str,
        api: str,
        host: str,
        port: int | None,
    ) -> None:
        self._observer = observer
        self._operation = operation
        self._api = api
        attributes: dict[str, Any] = {_OPERATION: operation, _API: api, "server.address": host}
        if port is not None:
            attributes["server.port"] = port
        self.span = observer.tracer.start_span(
            f"{_PREFIX} {operation}", kind=trace.SpanKind.INTERNAL, attributes=attributes
        )
        self._token = context.attach(trace.set_span_in_context(self.span))
        self._started = time.perf_counter()
        self._status: int | None = None

    def attempt(self, event: AttemptEvent) -> None:
        observer = self._observer
        instruments = observer.instruments
        operation, api, outcome = self._operation, self._api, event.outcome
        instruments.attempts.add(
            1, observer.labels(_OPERATION, operation, _API, api, _OUTCOME, outcome)
        )
        if event.status is not None:
            self._status = event.status
        if event.reason == "budget":
            instruments.budget_refusals.add(1, observer.labels(_OPERATION, operation, _API, api))
        if outcome == "token_rejected" and event.error in ("110", "111"):
            instruments.token_rejections.add(
                1, observer.labels(f"{_PREFIX}.error_code", event.error)
            )
        if not event.will_retry:
            return
        instruments.retries.add(
            1, observer.labels(_OPERATION, operation, _API, api, _REASON, outcome)
        )
        if self.span.is_recording():
            attributes: dict[str, Any] = {
                f"{_PREFIX}.attempt": event.attempt,
                _REASON: outcome,
                f"{_PREFIX}.retry.wait": event.retry_in or 0.0,
            }
            if event.status is not None:
                attributes["http.response.status_code"] = event.status
            self.span.add_event(f"{_PREFIX}.retry", attributes)

    def finish(self, error: BaseException | None, attempts: int) -> None:
        span = self.span
        try:
            outcome = "ok" if error is None else _kind(error)
            if span.is_recording():
                attributes: dict[str, Any] = {f"{_PREFIX}.attempts": attempts, _OUTCOME: outcome}
                if self._status is not None:
                    attributes["http.response.status_code"] = self._status
                if error is not None:
                    attributes["error.type"] = outcome
                    # The kind only: a message may quote Baidu, and Baidu may quote the request.
                    span.set_status(trace.StatusCode.ERROR, outcome)
                span.set_attributes(attributes)
            observer = self._observer
            instruments = observer.instruments
            operation, api = self._operation, self._api
            labels = observer.labels(_OPERATION, operation, _API, api, _OUTCOME, outcome)
            instruments.calls.add(1, labels)
            instruments.duration.record(time.perf_counter() - self._started, labels)
            if operation == "token":
                instruments.token_fetches.add(1, observer.labels(_OUTCOME, outcome))
        finally:
            try:
                span.end()  # an application's span processor may raise here
            finally:
                context.detach(self._token)


def _kind(error: BaseException) -> str:
    if isinstance(error, SwanAuthError):
        return error.kind
    # A cancellation, or a bug: the class name, never the message.
    return type(error).__qualname__
