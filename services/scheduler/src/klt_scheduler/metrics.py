"""Keptn's deployment metrics, under Keptn's Prometheus names.

Keptn exports OpenTelemetry instruments through a Prometheus exporter; the names its
dashboards query are what the scheduler serves here, on the service's own registry:

- counters ``keptn_app_count_total``, ``keptn_deployment_count_total`` and
  ``keptn_promotion_count_total``, incremented once per finished app or workload version (the
  status write that finishes it happens exactly once, whichever replica makes it);
- histograms ``keptn_app_duration`` and ``keptn_deployment_duration`` (seconds, OpenTelemetry's
  default boundaries);
- gauges ``keptn_app_active``, ``keptn_deployment_active``, the DORA
  ``keptn_{app,deployment}_deploymentduration`` and ``…_deploymentinterval``. Keptn lists every
  object from the apiserver on each scrape and searches every predecessor among all of them;
  here they are kept per version from the watch events (``Meters.follow``), and a scrape only
  reads them.

Label names are Keptn's attribute keys with dots turned into underscores. The scheduler's own
instruments (``klt_scheduler_*``: passes, their duration, write conflicts, gates released)
describe its work rather than the deployments.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from klt_common.clients.cluster import WatchCache, WatchEvent
from klt_scheduler.world import World, name_of, namespace_of, spec, status

_log = logging.getLogger(__name__)

Key = tuple[str, str]

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
        self._books = (
            _Book(world.app_versions, "appName"),
            _Book(world.workload_versions, "workloadName"),
        )
        registry.register(_BookGauges(world, *self._books))

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the gauges' books current until ``stop`` (a root task of the service)."""
        await asyncio.gather(*(book.run(stop) for book in self._books))

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


class _Version:
    """What the gauges need of one app or workload version, read once per watch event."""

    __slots__ = ("active", "dora", "duration", "end", "namespace", "predecessor", "start")

    def __init__(self, obj: Mapping[str, Any], parent_key: str) -> None:
        s, st = spec(obj), status(obj)
        self.namespace = namespace_of(obj)
        self.start = str(st.get("startTime", "") or "")
        self.end = _time(st.get("endTime"))
        self.duration = _duration(obj)
        self.dora = tuple(_dora_labels(obj, parent_key))
        if parent_key == "appName":
            self.active: tuple[str, ...] = (
                str(s.get("appName", "")),
                str(s.get("version", "")),
                self.namespace,
            )
        else:
            self.active = (
                str(s.get("app", "")),
                str(s.get("workloadName", "")),
                str(s.get("version", "")),
                self.namespace,
            )
        previous = str(s.get("previousVersion", "") or "")
        # Keptn's predecessor: the earliest-started version whose name starts with
        # <parent>-<previousVersion> (same namespace).
        self.predecessor = f"{s.get(parent_key, '')}-{previous}" if previous else ""


class _Book:
    """One kind's active, duration and interval gauges, kept from its watch cache's events.

    Keptn lists every version from the apiserver on each scrape and searches each one's
    predecessor among all of them. Here every watch event updates only the version it names
    and the versions whose predecessor it may be (found through an index of the name prefixes
    they wait for), and a scrape only reads the results.
    """

    def __init__(self, cache: WatchCache, parent_key: str) -> None:
        self._cache = cache
        self._parent_key = parent_key
        self._events = cache.subscribe()
        self._seeded = False
        self._versions: dict[Key, _Version] = {}
        self._names: dict[str, list[str]] = {}
        """Sorted names per namespace, for predecessor lookups by name prefix."""
        self._successors: dict[tuple[str, str], set[str]] = {}
        """(namespace, predecessor prefix) → names of the versions that wait for it."""
        self.intervals: dict[Key, float] = {}

    def versions(self) -> Iterator[tuple[Key, _Version]]:
        return iter(self._versions.items())

    async def run(self, stop: asyncio.Event) -> None:
        """Apply watch events as they come, so the queue stays short between scrapes."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                getter = asyncio.ensure_future(self._events.get())
                await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                self._seed()
                self._apply(getter.result())
                self.catch_up()
        finally:
            stopped.cancel()

    def catch_up(self) -> None:
        """Apply every event delivered so far (a scrape calls this, so it is never stale)."""
        if not self._seed():
            return
        while True:
            try:
                event = self._events.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._apply(event)

    def _seed(self) -> bool:
        # Events reach the queue only after the cache's first list, which is what seeds the
        # book; applying the queued ones afterwards converges on the cache's state.
        if not self._seeded and self._cache.synced:
            for obj in self._cache.values():
                self._upsert(obj)
            self._seeded = True
        return self._seeded

    def _apply(self, event: WatchEvent) -> None:
        try:
            if event.type == "DELETED":
                self._remove(event.object)
            elif event.type in ("ADDED", "MODIFIED"):
                self._upsert(event.object)
        except Exception:  # noqa: BLE001 - a gauge must never stop the scheduler
            _log.exception("metrics: could not apply a %s event", event.type)

    def _upsert(self, obj: Mapping[str, Any]) -> None:
        key = (namespace_of(obj), name_of(obj))
        version = _Version(obj, self._parent_key)
        old = self._versions.get(key)
        if old is None:
            bisect.insort(self._names.setdefault(key[0], []), key[1])
        elif old.predecessor:
            self._stop_waiting(key, old.predecessor)
        self._versions[key] = version
        if version.predecessor:
            self._successors.setdefault((key[0], version.predecessor), set()).add(key[1])
        self._interval(key)
        self._recheck_successors(key)

    def _remove(self, obj: Mapping[str, Any]) -> None:
        key = (namespace_of(obj), name_of(obj))
        old = self._versions.pop(key, None)
        if old is None:
            return
        names = self._names[key[0]]
        del names[bisect.bisect_left(names, key[1])]
        if not names:
            del self._names[key[0]]
        if old.predecessor:
            self._stop_waiting(key, old.predecessor)
        self.intervals.pop(key, None)
        self._recheck_successors(key)

    def _stop_waiting(self, key: Key, prefix: str) -> None:
        waiting = self._successors.get((key[0], prefix))
        if waiting is not None:
            waiting.discard(key[1])
            if not waiting:
                del self._successors[key[0], prefix]

    def _recheck_successors(self, key: Key) -> None:
        # The versions that may take this one as predecessor wait for a prefix of its name.
        namespace, name = key
        for end in range(1, len(name) + 1):
            for successor in tuple(self._successors.get((namespace, name[:end]), ())):
                self._interval((namespace, successor))

    def _interval(self, key: Key) -> None:
        version = self._versions[key]
        if not version.predecessor or version.end is None:
            self.intervals.pop(key, None)
            return
        names = self._names.get(key[0], [])
        first: _Version | None = None
        at = bisect.bisect_left(names, version.predecessor)
        while at < len(names) and names[at].startswith(version.predecessor):
            candidate = self._versions[key[0], names[at]]
            if first is None or candidate.start < first.start:
                first = candidate
            at += 1
        if first is None or first.end is None:
            self.intervals.pop(key, None)
        else:
            self.intervals[key] = (version.end - first.end).total_seconds()


class _BookGauges(Collector):
    """Keptn's observable gauges, read from the books at scrape time (in scope only)."""

    def __init__(self, world: World, apps: _Book, workloads: _Book) -> None:
        self._world = world
        self._apps = apps
        self._workloads = workloads

    def collect(self) -> Iterator[Metric]:
        admitted: dict[str, bool] = {}

        def in_scope(namespace: str) -> bool:
            known = admitted.get(namespace)
            if known is None:
                known = admitted[namespace] = self._world.admits(namespace)
            return known

        for prefix, what, book, active_labels, dora_labels in (
            ("keptn_app", "App", self._apps, _APP_ACTIVE, _APP_DORA),
            ("keptn_deployment", "Workload", self._workloads, _WORKLOAD_ACTIVE, _WORKLOAD_DORA),
        ):
            book.catch_up()
            active = GaugeMetricFamily(
                f"{prefix}_active", f"{what} versions in progress", labels=active_labels
            )
            duration = GaugeMetricFamily(
                f"{prefix}_deploymentduration",
                "Seconds a finished version took",
                labels=dora_labels,
            )
            interval = GaugeMetricFamily(
                f"{prefix}_deploymentinterval",
                "Seconds between the end of the previous version and the end of this one",
                labels=dora_labels,
            )
            for key, version in book.versions():
                if not in_scope(version.namespace):
                    continue
                active.add_metric(list(version.active), 0.0 if version.end else 1.0)
                if version.duration is not None:
                    duration.add_metric(list(version.dora), version.duration)
                seconds = book.intervals.get(key)
                if seconds is not None:
                    interval.add_metric(list(version.dora), seconds)
            yield active
            yield duration
            yield interval


_APP_ACTIVE = [APP_NAME, APP_VERSION, APP_NAMESPACE]
_WORKLOAD_ACTIVE = [APP_NAME, WORKLOAD_NAME, WORKLOAD_VERSION, WORKLOAD_NAMESPACE]
_APP_DORA = [APP_NAME, APP_NAMESPACE, APP_VERSION, APP_PREVIOUS]
_WORKLOAD_DORA = [APP_NAME, WORKLOAD_NAME, WORKLOAD_NAMESPACE, WORKLOAD_VERSION, WORKLOAD_PREVIOUS]


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
