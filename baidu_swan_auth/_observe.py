"""Observers: how instrumentation sees the calls the engine runs, at no cost when there is none.

The engine reads ``observer`` once per call. While it is None (nothing instrumented, the
default), a call pays for that one read and nothing else. An observer (OpenTelemetry's, in
``otel.py``) gets a ``CallObservation`` per call, the same ``AttemptEvent`` for each attempt that
``on_attempt`` hooks and the DEBUG log get (one event source, not two), and the call's end. Bulk
streams report the calls they have in flight and the pace they keep.

Nothing here imports an instrumentation library: ``import baidu_swan_auth`` stays free of them.
"""

from __future__ import annotations

from typing import Protocol

from ._models import AttemptEvent

__all__: list[str] = []


class CallObservation(Protocol):
    """One call, as an observer follows it (a span, for OpenTelemetry)."""

    def attempt(self, event: AttemptEvent) -> None:
        """An attempt ended: the event ``on_attempt`` hooks get."""
        ...

    def finish(self, error: BaseException | None, attempts: int) -> None:
        """The call ended, with ``error`` or (None) a result, after ``attempts`` requests."""
        ...


class Observer(Protocol):
    """What an instrumentation implements to follow the SDK's calls."""

    def start(self, operation: str, api: str, host: str, port: int | None) -> CallObservation:
        """A call starts: ``operation`` is ``exchange``, ``token`` or ``unionid``; ``api`` the
        Baidu API it calls; ``host`` and ``port`` where it goes."""
        ...

    def in_flight(self, delta: int) -> None:
        """A bulk stream started (+1) or finished (-1) a call."""
        ...

    def pace(self, rate: float) -> None:
        """A bulk stream keeps ``rate`` requests per second at most."""
        ...


#: The installed observer, or None. Set by ``otel.BaiduSwanAuthInstrumentor``; read by the engine
#: once per call.
observer: Observer | None = None
