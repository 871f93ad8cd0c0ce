"""Keptn's deployment metrics, under Keptn's Prometheus names.

Keptn exports OpenTelemetry instruments through a Prometheus exporter; the names its
dashboards query are what the scheduler serves here, on the service's own registry:

- counters ``keptn_app_count_total``, ``keptn_deployment_count_total`` and
  ``keptn_promotion_count_total``, incremented once per finished app or workload version (the
  status write that finishes it happens exactly once, whichever replica makes it);
- histograms ``keptn_app_duration`` and ``keptn_deployment_duration`` (seconds, OpenTelemetry's
  default boundaries);
- gauges ``keptn_app_active``, ``keptn_deployment_active``, the DORA
  ``keptn_{app,deployment}_deploymentduration`` and ``…_deploymentinterval``, computed at
  scrape time from the watch caches (Keptn lists every object from the apiserver per scrape).

Label names are Keptn's attribute keys with dots turned into underscores. The scheduler's own
instruments (``klt_scheduler_*``: passes, their duration, write conflicts, gates released)
describe its work rather than the deployments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from klt_scheduler.world import World, name_of, namespace_of, spec, status

APP_NAME = "keptn_deployment_app_name"
APP_VERSION = "keptn_deployment_app_version"
APP_NAMESPACE = "keptn_deployment_app_namespace"
APP_STATUS = "keptn_deployment_app_status"
APP_PREVIOUS = "keptn_deployment_app_previousversion"
WORKLOAD_NAME = "keptn_deployment_workload_name"
WORKLOAD_VERSION = "keptn_deployment_workload_version"
WORKLOAD_NAMESPACE = "keptn_deployment_workload_namespace"
WORKLOAD_STATUS = "keptn_deployment_workload_status"
WORKLOAD_PREVIOUS = "keptn_deployment_workload_previousversion"

APP_LABELS = (APP_NAME, APP_VERSION, APP_NAMESPACE, APP_STATUS)
WORKLOAD_LABELS = (APP_NAME, WORKLOAD_NAME, WORKLOAD_VERSION, WORKLOAD_NAMESPACE, WORKLOAD_STATUS)

# OpenTelemetry's default explicit bucket boundaries, which Keptn's histograms use.
_BUCKETS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, float("inf"))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Meters:
    """The scheduler's instruments."""

    def __init__(self, registry: CollectorRegistry, world: World) -> None:
        self.app_count = Counter(
            "keptn_app_count", "Number of app versions that finished", APP_LABELS, registry=registry
        )
        self.app_duration = Histogram(
            "keptn_app_duration",
            "Seconds from the start to the end of an app version",
            APP_LABELS,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.deployment_count = Counter(
            "keptn_deployment_count",
            "Number of workload versions that finished",
            WORKLOAD_LABELS,
            registry=registry,
        )
        self.deployment_duration = Histogram(
            "keptn_deployment_duration",
            "Seconds from the start to the end of a workload version",
            WORKLOAD_LABELS,
            buckets=_BUCKETS,
            registry=registry,
        )
        self.promotion_count = Counter(
            "keptn_promotion_count",
            "Number of app versions whose promotion tasks ran",
            APP_LABELS,
            registry=registry,
        )
        # The scheduler's own instruments (not Keptn's).
        self.passes = Counter(
            "klt_scheduler_passes",
            "Reconcile passes, by kind and result (written, unchanged, gone, failed)",
            ["kind", "result"],
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "klt_scheduler_pass_seconds",
            "Seconds one reconcile pass took, status write and gate release included",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.conflicts = Counter(
            "klt_scheduler_conflicts",
            "Status writes refused (409) because another writer came first; redone on top of it",
            ["kind"],
            registry=registry,
        )
        self.gates_released = Counter(
            "klt_scheduler_gates_released",
            "Pods whose keptn-prechecks-gate the scheduler removed",
            registry=registry,
        )
        registry.register(_CacheGauges(world))

    def app_finished(self, kav: Mapping[str, Any], *, promoted: bool) -> None:
        labels = app_labels(kav)
        self.app_count.labels(*labels).inc()
        if promoted:
            self.promotion_count.labels(*labels).inc()
        duration = _duration(kav)
        if duration is not None:
            self.app_duration.labels(*labels).observe(duration)

    def workload_finished(self, kwv: Mapping[str, Any]) -> None:
        labels = workload_labels(kwv)
        self.deployment_count.labels(*labels).inc()
        duration = _duration(kwv)
        if duration is not None:
            self.deployment_duration.labels(*labels).observe(duration)


def _duration(obj: Mapping[str, Any]) -> float | None:
    start, end = _time(status(obj).get("startTime")), _time(status(obj).get("endTime"))
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def app_labels(kav: Mapping[str, Any]) -> tuple[str, str, str, str]:
    s = spec(kav)
    return (
        str(s.get("appName", "")),
        str(s.get("version", "")),
        namespace_of(kav),
        str(status(kav).get("status", "")),
    )


def workload_labels(kwv: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    s = spec(kwv)
    return (
        str(s.get("app", "")),
        str(s.get("workloadName", "")),
        str(s.get("version", "")),
        namespace_of(kwv),
        str(status(kwv).get("status", "")),
    )


class _CacheGauges(Collector):
    """Keptn's observable gauges, read from the watch caches at scrape time."""

    def __init__(self, world: World) -> None:
        self._world = world

    def collect(self) -> Iterator[Metric]:
        world = self._world
        apps = list(world.in_scope(world.app_versions.values()))
        workloads = list(world.in_scope(world.workload_versions.values()))
        app_active = GaugeMetricFamily(
            "keptn_app_active",
            "App versions in progress",
            labels=[APP_NAME, APP_VERSION, APP_NAMESPACE],
        )
        for kav in apps:
            s = spec(kav)
            app_active.add_metric(
                [str(s.get("appName", "")), str(s.get("version", "")), namespace_of(kav)],
                0.0 if status(kav).get("endTime") else 1.0,
            )
        yield app_active
        deployment_active = GaugeMetricFamily(
            "keptn_deployment_active",
            "Workload versions in progress",
            labels=[APP_NAME, WORKLOAD_NAME, WORKLOAD_VERSION, WORKLOAD_NAMESPACE],
        )
        for kwv in workloads:
            s = spec(kwv)
            deployment_active.add_metric(
                [
                    str(s.get("app", "")),
                    str(s.get("workloadName", "")),
                    str(s.get("version", "")),
                    namespace_of(kwv),
                ],
                0.0 if status(kwv).get("endTime") else 1.0,
            )
        yield deployment_active
        yield from _dora(
            "keptn_app", apps, "appName", [APP_NAME, APP_NAMESPACE, APP_VERSION, APP_PREVIOUS]
        )
        yield from _dora(
            "keptn_deployment",
            workloads,
            "workloadName",
            [APP_NAME, WORKLOAD_NAME, WORKLOAD_NAMESPACE, WORKLOAD_VERSION, WORKLOAD_PREVIOUS],
        )


def _dora(
    prefix: str, objects: list[dict[str, Any]], parent_key: str, labels: list[str]
) -> Iterator[Metric]:
    duration = GaugeMetricFamily(
        f"{prefix}_deploymentduration", "Seconds a finished version took", labels=labels
    )
    interval = GaugeMetricFamily(
        f"{prefix}_deploymentinterval",
        "Seconds between the end of the previous version and the end of this one",
        labels=labels,
    )
    for obj in objects:
        s = spec(obj)
        values = _dora_labels(obj, parent_key)
        length = _duration(obj)
        if length is not None:
            duration.add_metric(values, length)
        previous = str(s.get("previousVersion", "") or "")
        end = _time(status(obj).get("endTime"))
        if not previous or end is None:
            continue
        # Keptn's predecessor: the earliest-started version whose name starts with
        # <parent>-<previousVersion>.
        prefix_name = f"{s.get(parent_key, '')}-{previous}"
        predecessors = [
            o
            for o in objects
            if name_of(o).startswith(prefix_name) and namespace_of(o) == namespace_of(obj)
        ]
        if not predecessors:
            continue
        first = min(predecessors, key=lambda o: str(status(o).get("startTime", "")))
        first_end = _time(status(first).get("endTime"))
        if first_end is not None:
            interval.add_metric(values, (end - first_end).total_seconds())
    yield duration
    yield interval


def _dora_labels(obj: Mapping[str, Any], parent_key: str) -> list[str]:
    s = spec(obj)
    previous = str(s.get("previousVersion", "") or "")
    if parent_key == "appName":
        return [str(s.get("appName", "")), namespace_of(obj), str(s.get("version", "")), previous]
    return [
        str(s.get("app", "")),
        str(s.get("workloadName", "")),
        namespace_of(obj),
        str(s.get("version", "")),
        previous,
    ]
