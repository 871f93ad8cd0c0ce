"""OpenTelemetry tracing set-up.

A tracer provider is always installed, so spans exist and their context travels in Kafka
headers even when nothing exports them; the OTLP exporter is added only when an endpoint is
configured. Tests pass their own span processor (an in-memory exporter) instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TRACE_ANNOTATION = "klt.sh/traceparent"
"""Annotation on a KeptnEvaluation with the traceparent of its phase (a KeptnTask carries it in
``spec.context.metadata``, as Keptn does), so the evaluator's events join the trace."""


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


@contextlib.contextmanager
def in_trace(traceparent: str | None) -> Iterator[None]:
    """Make the W3C ``traceparent`` the current context inside the block (no-op when empty).

    For work that belongs to a trace whose spans are not held open in this process (the
    scheduler writes its spans from the resources' status; the task-runner and evaluator
    learn a check's trace from the check): what is published inside carries that trace.
    """
    if not traceparent:
        yield
        return
    token = otel_context.attach(propagate.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)
