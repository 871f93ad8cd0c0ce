"""JSON log lines carry the service and the current trace; probes reflect readiness checks."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Gauge

from klt_common.observability import JsonFormatter, ProbeServer, Readiness, make_tracer_provider


def test_a_log_line_is_one_json_object_with_the_current_trace_id() -> None:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("svc", processors=[SimpleSpanProcessor(exporter)])
    formatter = JsonFormatter("scheduler")
    with provider.get_tracer("t").start_as_current_span("phase") as span:
        record = logging.makeLogRecord(
            {"name": "x", "levelname": "INFO", "msg": "advanced %s", "args": ("app",)}
        )
        record.app = "podtato"
        line = json.loads(formatter.format(record))
    assert line["msg"] == "advanced app"
    assert line["service"] == "scheduler"
    assert line["app"] == "podtato"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert [s.name for s in exporter.get_finished_spans()] == ["phase"]


async def test_probes_report_readiness_checks_and_serve_the_given_registry() -> None:
    registry = CollectorRegistry()
    Gauge("klt_test_gauge", "a gauge", registry=registry).set(7)
    synced = False
    readiness = Readiness()
    readiness.add("cache", lambda: synced)
    server = ProbeServer("127.0.0.1", 0, registry, readiness)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    port = await server.wait_started()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                assert await r.json() == {"cache": False}
            synced = True
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert "klt_test_gauge 7.0" in await r.text()
    finally:
        stop.set()
        await task
