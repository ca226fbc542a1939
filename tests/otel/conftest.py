"""The ``telemetry`` fixture: the SDK instrumented into in-memory providers, for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .telemetry import Telemetry, instrument


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exported = Telemetry()
    instrumentor = instrument(exported)
    try:
        yield exported
    finally:
        instrumentor.uninstrument()
