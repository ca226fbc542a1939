"""What the OpenTelemetry tests share: the SDK's in-memory exporter and reader, read back, and
the values a test must not find in them."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor
from baidu_swan_auth.testing import FakeBaiduServer


class Telemetry:
    """What the instrumentation exported, read back."""

    def __init__(self, *processors: SpanProcessor) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def all_points(self) -> list[tuple[str, dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        found: list[tuple[str, dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = getattr(point, "count", None)
                        found.append((metric.name, dict(point.attributes or {}), value))
        return found

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        return [(labels, value) for metric, labels, value in self.all_points() if metric == name]

    def value(self, name: str, **attributes: Any) -> Any:
        wanted = {f"baidu_swan_auth.{key}": value for key, value in attributes.items()}
        values = [
            value
            for labels, value in self.points(f"baidu_swan_auth.{name}")
            if all(labels.get(key) == value for key, value in wanted.items())
        ]
        return sum(values) if values else None

    def exported_text(self) -> str:
        spans = [span.to_json() for span in self.finished()]
        data = self.reader.get_metrics_data()
        return "\n".join(spans) + (data.to_json() if data is not None else "")

    def assert_hides(self, *secrets: str) -> None:
        text = self.exported_text()
        for secret in secrets:
            assert secret
            assert secret not in text
            assert json.dumps(secret)[1:-1] not in text


def instrument(telemetry: Telemetry) -> BaiduSwanAuthInstrumentor:
    instrumentor = BaiduSwanAuthInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    return instrumentor


def secrets_of(fake: FakeBaiduServer, *codes: str) -> list[str]:
    values = [fake.secret, *codes]
    for code in codes:
        grant = fake.grant_for(code)
        values += [grant.openid, grant.session_key]
    values += fake.tokens_issued
    return values
