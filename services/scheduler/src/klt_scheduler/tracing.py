"""Spans of app and workload versions, rebuilt from their status.

Keptn keeps the span of a running phase in the operator's memory and records the phase span's
context in ``status.phaseTraceIDs[<phase>]`` (the root span's under the key ``""``), so that
tasks and workload versions can name it as their parent. A phase may start in one scheduler
process and finish in another (a restart, a rebalance, a second replica), so here no span lives
in memory at all:

- when a phase (or the version) starts, its span ids are *chosen* and written into
  ``phaseTraceIDs`` together with the start time (``klt-start``) and the parent's traceparent
  (``klt-parent``), in the same status write that starts the phase;
- when it ends, whichever process writes the end creates the span with exactly those ids, that
  start time and that parent, and ends it at once.

The trace is therefore the same whoever ran which part of the lifecycle, and tasks that were
handed ``traceparent`` in their KEPTN_CONTEXT point at a span that really is exported.
Choosing ids relies on the SDK tracer's ``id_generator`` (swapped for the duration of one
synchronous ``start_span`` call); with any other tracer the spans get fresh ids.

Span names and attributes are Keptn's: the root is named after the object, app phases by their
short name, workload phases ``<workloadName>/<phase>``, tasks and evaluations after the object.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

ROOT = ""
"""``phaseTraceIDs`` key of the version's own span (Keptn stores it under the empty key)."""

START_KEY = "klt-start"
PARENT_KEY = "klt-parent"
TRACEPARENT = "traceparent"

Carrier = dict[str, str]
Attributes = Mapping[str, str | int | float | bool]


def format_traceparent(trace_id: int, span_id: int, flags: int = 1) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """A W3C ``traceparent`` as a remote span context, or None when absent or malformed."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def _iso(value: datetime) -> str:
    return value.isoformat()


def _nanos(value: str | None, default: datetime) -> int:
    when = default
    if value:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = default
    return int(when.timestamp() * 1e9)


def open_span(ids: dict[str, Carrier], key: str, *, parent: str | None, now: datetime) -> Carrier:
    """Choose the ids of the span ``key`` (the root or a phase) and record them in ``ids``.

    ``parent`` is the traceparent the span will be a child of; without one the span starts a
    trace of its own. Returns the carrier, whose ``traceparent`` names the new span.
    """
    parent_ctx = parse_traceparent(parent)
    trace_id = parent_ctx.trace_id if parent_ctx else random.getrandbits(128) or 1
    flags = int(parent_ctx.trace_flags) if parent_ctx else 1
    carrier: Carrier = {
        TRACEPARENT: format_traceparent(trace_id, random.getrandbits(64) or 1, flags),
        START_KEY: _iso(now),
    }
    if parent:
        carrier[PARENT_KEY] = parent
    ids[key] = carrier
    return carrier


@dataclass(frozen=True)
class SpanRecord:
    """A span to export once the status write that ends it has succeeded."""

    name: str
    carrier: Mapping[str, str] | None
    """The recorded ids (None: a span with fresh ids, e.g. a task's)."""
    parent: str | None
    start: str | None
    end: datetime
    ok: bool
    attributes: Attributes = field(default_factory=dict)
    events: Sequence[str] = ()
    links: Sequence[str] = ()
    """traceparents this span follows from (a KeptnAppContext's spanLinks)."""


class _FixedIds(IdGenerator):
    def __init__(self, trace_id: int, span_id: int) -> None:
        self._trace_id = trace_id
        self._span_id = span_id

    def generate_span_id(self) -> int:
        return self._span_id

    def generate_trace_id(self) -> int:
        return self._trace_id


class SpanExporter:
    """Creates finished spans on the service's tracer from ``SpanRecord``s."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def export(self, record: SpanRecord) -> None:
        parent_ctx = parse_traceparent(record.parent)
        context = (
            trace.set_span_in_context(trace.NonRecordingSpan(parent_ctx)) if parent_ctx else None
        )
        links = [
            Link(ctx, {"opentracing.ref_type": "follows-from"})
            for ctx in (parse_traceparent(link) for link in record.links)
            if ctx is not None
        ]
        own = parse_traceparent((record.carrier or {}).get(TRACEPARENT))
        start_ns = _nanos(record.start, record.end)
        end_ns = max(start_ns, int(record.end.timestamp() * 1e9))
        span = self._start(record.name, context, own, start_ns, dict(record.attributes), links)
        for text in record.events:
            span.add_event(text, timestamp=end_ns)
        if record.ok:
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_status(Status(StatusCode.ERROR, "Failed"))
        span.end(end_time=end_ns)

    def _start(
        self,
        name: str,
        context: Context | None,
        own: SpanContext | None,
        start_ns: int,
        attributes: dict[str, str | int | float | bool],
        links: list[Link],
    ) -> trace.Span:
        generator = getattr(self._tracer, "id_generator", None)
        if own is None or generator is None:
            return self._begin(name, context, start_ns, attributes, links)
        # start_span is synchronous, so nothing else can start a span on this tracer while the
        # fixed generator is in place.
        self._tracer.id_generator = _FixedIds(own.trace_id, own.span_id)  # type: ignore[attr-defined]
        try:
            return self._begin(name, context, start_ns, attributes, links)
        finally:
            self._tracer.id_generator = generator  # type: ignore[attr-defined]

    def _begin(
        self,
        name: str,
        context: Context | None,
        start_ns: int,
        attributes: dict[str, str | int | float | bool],
        links: list[Link],
    ) -> trace.Span:
        return self._tracer.start_span(
            name,
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=start_ns,
        )
