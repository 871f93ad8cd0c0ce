"""OpenTelemetry tracing set-up.

A tracer provider is always installed, so spans exist and their context travels in Kafka
headers even when nothing exports them; the OTLP exporter is added only when an endpoint is
configured. Tests pass their own span processor (an in-memory exporter) instead.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def make_tracer_provider(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    processors: list[SpanProcessor] | None = None,
) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        # Imported lazily: the gRPC stack is heavy and most test processes never export.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
        )
    for processor in processors or []:
        provider.add_span_processor(processor)
    return provider


def install_global(provider: TracerProvider) -> None:
    """Make ``provider`` the process-wide one; only entry points call this."""
    trace.set_tracer_provider(provider)
