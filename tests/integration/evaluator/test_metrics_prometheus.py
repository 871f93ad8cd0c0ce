"""KeptnMetrics answered by a real Prometheus (real PromQL over what the exporter serves).

Covers: instant queries and their status (value, rawValue, lastUpdated, errMsg), ranged queries
with step and aggregation, storedResults as a FIFO, the /metrics gauge and the KEDA endpoint,
spec changes picked up at once, and the errors a real Prometheus produces (no series, several
series, a syntax error, NaN, a server that is down).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from evaluator_kit import (
    Exporter,
    PrometheusServer,
    StartEvaluator,
    make_metric,
    make_provider,
    metric_status,
    wait_metric,
    wait_until,
)

from klt_common.clients import cluster as k8s


def series_name() -> str:
    return f"klt_test_{uuid.uuid4().hex[:8]}"


async def test_an_instant_query_writes_value_raw_value_and_follows_changes(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    evaluator: StartEvaluator,
) -> None:
    series = series_name()
    exporter.set(series, 42.5)
    await prometheus.wait_for(series, 42.5)
    await make_provider(cluster, namespace, "prom", prometheus.url, type_="prometheus")
    await make_metric(cluster, namespace, shard, "cart-latency", f"sum({series})", provider="prom")
    running = await evaluator()

    status = await wait_metric(cluster, namespace, "cart-latency", value="42.5")
    # rawValue is Go []byte on the wire (base64); Prometheus' sample marshals as a JSON string.
    assert base64.b64decode(status["rawValue"]) == b'"42.5"'
    assert "errMsg" not in status
    assert status["lastUpdated"].endswith("Z")

    exporter.set(series, 7.0)
    await wait_metric(cluster, namespace, "cart-latency", value="7")

    code, text = await running.get("/metrics")
    assert code == 200
    assert "# HELP cart_latency cart-latency" in text
    assert f'cart_latency{{metric="cart-latency",namespace="{namespace}"}} 7.0' in text

    code, answer = await running.get(f"/api/v1/metrics/{namespace}/cart-latency")
    assert (code, answer) == (200, {"namespace": namespace, "metric": "cart-latency", "value": "7"})
    code, answer = await running.get(f"/api/v1/metrics/{namespace}/nope")
    assert code == 404
    assert "klt_evaluator_provider_sessions 1.0" in text  # one session for the one target


async def test_a_ranged_query_aggregates_the_steps_and_keeps_a_fifo_of_results(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    evaluator: StartEvaluator,
) -> None:
    series = series_name()
    exporter.set(series, 5.0)
    await prometheus.wait_for(series, 5.0)
    await make_provider(cluster, namespace, "prom", prometheus.url, type_="prometheus")
    await make_metric(
        cluster,
        namespace,
        shard,
        "ranged",
        f"max({series})",
        provider="prom",
        range_={"interval": "30s", "step": "1s", "aggregation": "max", "storedResults": 3},
    )
    await evaluator()
    status = await wait_metric(cluster, namespace, "ranged", value="5")
    raw = json.loads(base64.b64decode(status["rawValue"]))
    assert isinstance(raw, list)
    assert set(raw) == {"5"}  # every step sample, as strings

    exporter.set(series, 9.0)
    status = await wait_metric(cluster, namespace, "ranged", value="9")

    async def three_results() -> list[dict[str, Any]] | None:
        results = (await metric_status(cluster, namespace, "ranged")).get("intervalResults")
        return results if results and len(results) == 3 else None

    results = await wait_until(three_results)
    # A FIFO of at most storedResults entries, oldest first, each with the range it covered.
    assert all(r["range"]["interval"] == "30s" for r in results)
    stamps = [r["lastUpdated"] for r in results]
    assert stamps == sorted(stamps)
    for _ in range(2):
        before = stamps[-1]

        async def newer(before: str = before) -> list[dict[str, Any]] | None:
            status = await metric_status(cluster, namespace, "ranged")
            got = status.get("intervalResults") or []
            return got if got and got[-1]["lastUpdated"] > before else None

        results = await wait_until(newer)
        assert len(results) == 3
        stamps = [r["lastUpdated"] for r in results]


async def test_prometheus_errors_become_err_msg_and_the_loop_goes_on(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    evaluator: StartEvaluator,
) -> None:
    series = series_name()
    exporter.set(series, 1.0, pod="a")
    exporter.set(series, 2.0, pod="b")
    await prometheus.wait_for(f"count({series})", 2.0)
    await make_provider(cluster, namespace, "prom", prometheus.url, type_="prometheus")
    await make_provider(cluster, namespace, "down", "http://127.0.0.1:9", type_="prometheus")
    await make_metric(cluster, namespace, shard, "empty", "absent_xyz_nope", provider="prom")
    await make_metric(cluster, namespace, shard, "many", series, provider="prom")
    await make_metric(cluster, namespace, shard, "syntax", "sum(", provider="prom")
    await make_metric(cluster, namespace, shard, "nan", "0/0", provider="prom")
    await make_metric(cluster, namespace, shard, "inf", "1/0", provider="prom")
    await make_metric(cluster, namespace, shard, "unreachable", "1", provider="down")
    await make_metric(cluster, namespace, shard, "no-provider", "1", provider="missing")
    await make_metric(cluster, namespace, shard, "fine", f"sum({series})", provider="prom")
    running = await evaluator()

    await wait_metric(cluster, namespace, "empty", errMsg="no values in query result", value="")
    await wait_metric(cluster, namespace, "many", errMsg="too many values in query result")
    status = await wait_metric(cluster, namespace, "nan", value="")
    assert status["errMsg"] == "query result is NaN, not a finite number"
    status = await wait_metric(cluster, namespace, "inf", value="")
    assert status["errMsg"] == "query result is +Inf, not a finite number"
    status = await wait_until(lambda: metric_status(cluster, namespace, "syntax"), timeout=30)
    status = await wait_metric(cluster, namespace, "syntax", value="")
    assert status["errMsg"].startswith("bad_data: ")
    status = await wait_metric(cluster, namespace, "unreachable", value="")
    assert status["errMsg"].startswith("cannot reach prometheus provider at http://127.0.0.1:9")
    status = await wait_metric(cluster, namespace, "no-provider", value="")
    assert status["errMsg"] == f"KeptnMetricsProvider 'missing' not found in namespace {namespace}"
    # The good metric is unaffected, and the failing ones keep being retried on their interval.
    await wait_metric(cluster, namespace, "fine", value="3")
    first = (await metric_status(cluster, namespace, "many"))["lastUpdated"]
    await wait_until(lambda: _later(cluster, namespace, "many", first), timeout=10)
    code, _ = await running.get("/healthz")
    assert code == 200


async def _later(cluster: k8s.ClusterClient, namespace: str, name: str, stamp: str) -> bool:
    return str((await metric_status(cluster, namespace, name)).get("lastUpdated")) > stamp
