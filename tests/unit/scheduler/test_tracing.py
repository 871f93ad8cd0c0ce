"""Spans rebuilt from status: the ids chosen when a phase starts are the ids exported when it
ends, whichever process ends it, with the recorded parent and start time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from klt_scheduler import tracing


def _exporter() -> tuple[tracing.SpanExporter, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return tracing.SpanExporter(provider.get_tracer("test")), memory


def test_traceparents_round_trip() -> None:
    value = tracing.format_traceparent(0xABC, 0x123, 1)
    assert value == "00-00000000000000000000000000000abc-0000000000000123-01"
    ctx = tracing.parse_traceparent(value)
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, int(ctx.trace_flags)) == (0xABC, 0x123, 1)
    for broken in (None, "", "00-zz-11-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert tracing.parse_traceparent(broken) is None


def test_a_phase_span_is_exported_with_the_ids_recorded_when_it_started() -> None:
    exporter, memory = _exporter()
    started = datetime(2026, 1, 1, tzinfo=UTC)
    ids: dict[str, dict[str, str]] = {}
    upstream = tracing.format_traceparent(0xFEED, 0xBEEF, 1)
    root = tracing.open_span(ids, tracing.ROOT, parent=upstream, now=started)
    phase = tracing.open_span(
        ids, "AppDeploy", parent=root[tracing.TRACEPARENT], now=started + timedelta(seconds=1)
    )
    # Later, possibly in another process: only the carrier is known.
    exporter.export(
        tracing.SpanRecord(
            name="AppDeploy",
            carrier=phase,
            parent=phase[tracing.PARENT_KEY],
            start=phase[tracing.START_KEY],
            end=started + timedelta(seconds=3),
            ok=True,
            attributes={"keptn.deployment.app.name": "shop"},
            events=("App Deployment has succeeded",),
        )
    )
    [span] = memory.get_finished_spans()
    own = tracing.parse_traceparent(phase[tracing.TRACEPARENT])
    parent = tracing.parse_traceparent(root[tracing.TRACEPARENT])
    assert own is not None
    assert parent is not None
    assert span.context.trace_id == 0xFEED == own.trace_id
    assert span.context.span_id == own.span_id
    assert span.parent is not None
    assert span.parent.span_id == parent.span_id
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.OK
    assert span.end_time - span.start_time == 2_000_000_000
    assert span.attributes["keptn.deployment.app.name"] == "shop"
    assert [e.name for e in span.events] == ["App Deployment has succeeded"]


def test_a_root_without_parent_starts_its_own_trace_and_links_follow_from() -> None:
    exporter, memory = _exporter()
    now = datetime.now(UTC)
    ids: dict[str, dict[str, str]] = {}
    root = tracing.open_span(ids, tracing.ROOT, parent=None, now=now)
    assert tracing.PARENT_KEY not in root
    link = tracing.format_traceparent(0x1, 0x2, 1)
    exporter.export(
        tracing.SpanRecord(
            name="shop-1-6b86b273",
            carrier=root,
            parent=None,
            start=root[tracing.START_KEY],
            end=now,
            ok=False,
            links=(link,),
        )
    )
    [span] = memory.get_finished_spans()
    recorded = tracing.parse_traceparent(root[tracing.TRACEPARENT])
    assert recorded is not None
    assert (span.context.trace_id, span.context.span_id) == (recorded.trace_id, recorded.span_id)
    assert span.parent is None
    assert span.status.status_code is StatusCode.ERROR
    assert [(lk.context.trace_id, dict(lk.attributes or {})) for lk in span.links] == [
        (0x1, {"opentracing.ref_type": "follows-from"})
    ]


def test_spans_without_recorded_ids_get_fresh_ones() -> None:
    exporter, memory = _exporter()
    now = datetime.now(UTC)
    exporter.export(
        tracing.SpanRecord(
            name="pre-check-1234",
            carrier=None,
            parent=tracing.format_traceparent(0x5, 0x6, 1),
            start=None,
            end=now,
            ok=True,
        )
    )
    [span] = memory.get_finished_spans()
    assert span.context.trace_id == 0x5
    assert span.parent is not None
    assert span.parent.span_id == 0x6
