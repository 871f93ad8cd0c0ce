"""Keptn's task and evaluation instruments, under the Prometheus names Keptn's dashboards query.

Keptn exports OpenTelemetry instruments through a Prometheus exporter, which turns an attribute
such as ``keptn.deployment.task.name`` into the label ``keptn_deployment_task_name``, adds
``_total`` to counters and gives histograms OpenTelemetry's default boundaries. For each kind of
check (``task``, ``evaluation``) that makes:

- ``keptn_<kind>_count_total`` and ``keptn_<kind>_duration`` (seconds), recorded once when a
  check finishes, with the app, workload, name, type and final status of the check;
- ``keptn_<kind>_active``: one series per existing check, 1 while it runs and 0 once it ended,
  without the status.

Keptn computes its ``*_active`` gauges by listing every object from the apiserver on each
scrape. ``ActiveGauge`` is kept current from watch events instead, so a scrape costs only the
series it returns. The task-runner and the evaluator feed these from their own watch caches and
status writes; the scheduler serves the app and deployment instruments the same way.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "OTEL_BUCKETS",
    "ActiveGauge",
    "CheckIdentity",
    "CheckMeters",
    "label_name",
    "seconds_between",
]

OTEL_BUCKETS = (
    0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, float("inf"),
)  # fmt: skip
"""OpenTelemetry's default explicit bucket boundaries, which Keptn's histograms use."""

APP_NAME = "keptn.deployment.app.name"
APP_VERSION = "keptn.deployment.app.version"
WORKLOAD_NAME = "keptn.deployment.workload.name"
WORKLOAD_VERSION = "keptn.deployment.workload.version"


def label_name(attribute: str) -> str:
    """The Prometheus label of an OpenTelemetry attribute (what Keptn's exporter makes)."""
    return attribute.replace(".", "_")


def seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from ``start`` to ``end`` (RFC 3339 strings), or None when either is missing."""
    first, last = _time(start), _time(end)
    if first is None or last is None:
        return None
    return max(0.0, (last - first).total_seconds())


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ActiveGauge(Collector):
    """A gauge with one series per object, set from watch events and read at scrape time.

    Objects are keyed by whatever identifies them (namespace and name); their labels may change.
    Two objects with the same labels (Keptn's attributes do not include the namespace) make one
    series, which reads 1 while either is active, as an observable gauge reporting both would.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._series: dict[Hashable, tuple[tuple[str, ...], bool]] = {}
        registry.register(self)

    def set(self, key: Hashable, labels: Sequence[str], *, active: bool) -> None:
        if len(labels) != len(self._labelnames):
            raise ValueError(f"{self._name} takes {len(self._labelnames)} label values")
        self._series[key] = (tuple(labels), active)

    def remove(self, key: Hashable) -> None:
        self._series.pop(key, None)

    def describe(self) -> Iterator[Metric]:
        # Lets the registry reject a second collector of the same name at registration.
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        merged: dict[tuple[str, ...], bool] = {}
        for labels, active in self._series.values():
            merged[labels] = merged.get(labels, False) or active
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, active in merged.items():
            family.add_metric(list(labels), 1.0 if active else 0.0)
        yield family


@dataclass(frozen=True)
class CheckIdentity:
    """The attributes Keptn gives a task's or evaluation's instruments (all but the status)."""

    app: str
    app_version: str
    workload: str
    workload_version: str
    name: str
    type: str

    def values(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.app,
            self.app_version,
            self.workload,
            self.workload_version,
            self.name,
            self.type,
        )


class CheckMeters:
    """``keptn_<kind>_count``, ``keptn_<kind>_duration`` and ``keptn_<kind>_active``."""

    def __init__(self, kind: str, registry: CollectorRegistry) -> None:
        prefix = f"keptn.deployment.{kind}"
        identity = [
            label_name(attribute)
            for attribute in (
                APP_NAME,
                APP_VERSION,
                WORKLOAD_NAME,
                WORKLOAD_VERSION,
                f"{prefix}.name",
                f"{prefix}.type",
            )
        ]
        with_status = [*identity, label_name(f"{prefix}.status")]
        self.count = Counter(
            f"keptn_{kind}_count", f"Number of finished {kind}s", with_status, registry=registry
        )
        self.duration = Histogram(
            f"keptn_{kind}_duration",
            f"Seconds from the start to the end of a {kind}",
            with_status,
            buckets=OTEL_BUCKETS,
            registry=registry,
        )
        self.active = ActiveGauge(
            f"keptn_{kind}_active", f"{kind.capitalize()}s in progress", identity, registry
        )

    def finished(self, identity: CheckIdentity, status: str, seconds: float | None) -> None:
        """A check reached its final ``status``; call once per check (at the write that ends
        it), as Keptn counts each finished check once."""
        labels = (*identity.values(), status)
        self.count.labels(*labels).inc()
        if seconds is not None:
            self.duration.labels(*labels).observe(seconds)

    def seen(self, key: Hashable, identity: CheckIdentity, *, ended: bool) -> None:
        """A check exists (created, changed or listed); ``ended`` once it has an end time."""
        self.active.set(key, identity.values(), active=not ended)

    def gone(self, key: Hashable) -> None:
        """A check was deleted: its series goes with it."""
        self.active.remove(key)
