"""Helpers for the app-aggregator integration tests.

The aggregator runs in-process (``serve``) against the real apiserver and Kafka, scoped to the
test's namespace and topic prefix. Tests publish ``PodAdmitted`` as the webhook would, for real
workload objects (so owner references resolve and garbage collection keeps its hands off), and
read what the aggregator published from the test's own ``klt.lifecycle`` topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from klt_app_aggregator.app import setup
from klt_app_aggregator.settings import AggregationSettings, AppAggregatorSettings
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import serve
from klt_common.structs import events

T = TypeVar("T")

KW = k8s.keptn_resource("KeptnWorkload")
KWV = k8s.keptn_resource("KeptnWorkloadVersion")
APPS = k8s.keptn_resource("KeptnApp")
KAV = k8s.keptn_resource("KeptnAppVersion")
KACR = k8s.keptn_resource("KeptnAppCreationRequest")
CONTEXTS = k8s.keptn_resource("KeptnAppContext")
CONFIGS = k8s.keptn_resource("KeptnConfig")


def aggregator_settings(
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
    namespace: str,
    **aggregation: Any,
) -> AppAggregatorSettings:
    values: dict[str, Any] = {
        "namespace": namespace,
        "shard": namespace,
        "keptn_config_namespace": namespace,
        "creation_request_timeout_seconds": 3.0,
        "resync_seconds": 2.0,
        "gated_pod_grace_seconds": 1.0,
        "retry_delays": (0.2, 0.5, 1.0),
    }
    values.update(aggregation)
    return AppAggregatorSettings(
        instance_id=f"test-{uuid.uuid4().hex[:6]}",
        bus=bus_settings,
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
        aggregation=AggregationSettings(**values),
    )


@dataclass
class RunningAggregator:
    settings: AppAggregatorSettings
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running(settings: AppAggregatorSettings) -> AsyncIterator[RunningAggregator]:
    """Run the aggregator until the block ends; ready once its probes serve."""
    stop = asyncio.Event()
    registry = CollectorRegistry()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, setup, stop=stop, registry=registry, on_ready=ready.set_result),
        name="aggregator",
    )
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the aggregator did not become ready"
    try:
        yield RunningAggregator(settings, registry, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


# --- real workload objects ---------------------------------------------------------------------


def _template(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36"}],
            # Nothing is meant to run: keep any pod off every node.
            "nodeSelector": {"klt.test/nowhere": "true"},
        },
    }


async def create_deployment(
    cluster: k8s.ClusterClient, ns: str, name: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Deployment with no replicas, and the ReplicaSet the controller-manager makes for it
    (the owner of its pods, hence of the KeptnWorkload)."""
    labels = {"app": name}
    await cluster.create(
        k8s.DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": _template(labels),
            },
        },
        ns,
    )

    async def replicaset() -> dict[str, Any] | None:
        listed = await cluster.list(k8s.REPLICASETS, ns)
        for rs in listed.items:
            owners = rs["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "Deployment" and o["name"] == name for o in owners):
                return rs
        return None

    return await eventually(replicaset, timeout=30, what=f"the ReplicaSet of {name}")


async def create_statefulset(cluster: k8s.ClusterClient, ns: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    return await cluster.create(
        k8s.STATEFULSETS,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": 0,
                "serviceName": name,
                "selector": {"matchLabels": labels},
                "template": _template(labels),
            },
        },
        ns,
    )


async def create_daemonset(cluster: k8s.ClusterClient, ns: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    return await cluster.create(
        k8s.DAEMONSETS,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": labels}, "template": _template(labels)},
        },
        ns,
    )


def admitted(
    owner: dict[str, Any],
    *,
    app: str,
    workload_key: str,
    version: str,
    single_service: bool = False,
    **extra: Any,
) -> events.PodAdmitted:
    """The event the webhook publishes for a pod of ``owner``."""
    meta = owner["metadata"]
    return events.PodAdmitted(
        namespace=meta["namespace"],
        app=app,
        pod_name=f"{meta['name']}-{uuid.uuid4().hex[:5]}",
        pod_uid=str(uuid.uuid4()),
        owner=events.OwnerRef(
            kind=owner["kind"], name=meta["name"], uid=meta["uid"], api_version=owner["apiVersion"]
        ),
        workload=f"{app}-{workload_key}",
        version=version,
        app_type_single_service=single_service,
        admitted_at=datetime.now(UTC),
        **extra,
    )


# --- what the aggregator published --------------------------------------------------------------


@dataclass
class Announcements:
    """Every AppVersionCreated / WorkloadVersionCreated on the test's lifecycle topic."""

    apps: list[events.Envelope[events.AppVersionCreated]] = field(default_factory=list)
    workloads: list[events.Envelope[events.WorkloadVersionCreated]] = field(default_factory=list)

    async def on_app(
        self, envelope: events.Envelope[events.AppVersionCreated], _where: bus.Coordinates
    ) -> None:
        self.apps.append(envelope)

    async def on_workload(
        self, envelope: events.Envelope[events.WorkloadVersionCreated], _where: bus.Coordinates
    ) -> None:
        self.workloads.append(envelope)


@contextlib.asynccontextmanager
async def listening(bus_settings: BusSettings) -> AsyncIterator[Announcements]:
    seen = Announcements()
    await bus.ensure_topics(bus_settings, list(events.Topic))
    consumer = bus.Consumer(
        bus_settings, group_id=f"listener-{uuid.uuid4().hex[:8]}", client_id="listener"
    )
    consumer.register(events.AppVersionCreated, seen.on_app)
    consumer.register(events.WorkloadVersionCreated, seen.on_workload)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop), name="listener")
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def create_gated_pod(
    cluster: k8s.ClusterClient,
    ns: str,
    name: str,
    owner: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the webhook leaves it (gated), created straight through the API: no webhook,
    no event. The owner reference is not a controller reference and the labels match no
    selector, so no controller adopts or deletes the pod."""
    return await cluster.create(
        k8s.PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"klt.test/orphan": name},
                "annotations": annotations or {},
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": owner["metadata"]["name"],
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "schedulingGates": [{"name": "keptn-prechecks-gate"}],
                "containers": [{"name": "main", "image": "busybox:1.36"}],
            },
        },
        ns,
    )
