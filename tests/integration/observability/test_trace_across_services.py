"""One app version's trace spans two services: the app-aggregator starts it, the scheduler
continues it.

The app-aggregator and the scheduler run in-process, each with its own tracer provider
(``service.name`` app-aggregator / scheduler) exporting to one in-memory exporter. The test
plays the webhook: it publishes ``PodAdmitted`` for a real ReplicaSet (no replicas, so its
deployment check passes at once). The aggregator creates the workload, the app and the app
version; as Keptn does, it starts the version's trace with a root span named after the version
and hands its context to the scheduler in ``spec.traceId``; the scheduler's spans of the
version (root, phases, the workload version and its phases) then belong to that trace.

The namespace carries both shard labels, so the stack's own aggregator and scheduler keep
away from it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from observability_kit import eventually, running
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from klt_app_aggregator.app import setup as aggregator_setup
from klt_app_aggregator.settings import SHARD_LABEL as AGGREGATOR_SHARD
from klt_app_aggregator.settings import AggregationSettings, AppAggregatorSettings
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.observability import make_tracer_provider
from klt_common.service import ServiceContext
from klt_common.structs import events
from klt_scheduler.app import setup as scheduler_setup
from klt_scheduler.settings import SHARD_LABEL as SCHEDULER_SHARD
from klt_scheduler.settings import LifecycleSettings, SchedulerSettings

pytestmark = pytest.mark.timeout(120)

KAV = k8s.keptn_resource("KeptnAppVersion")

APP_PHASES = (
    "AppPreDeployTasks",
    "AppPreDeployEvaluations",
    "AppDeploy",
    "AppPostDeployTasks",
    "AppPostDeployEvaluations",
)
WORKLOAD_PHASES = (
    "WorkloadPreDeployTasks",
    "WorkloadPreDeployEvaluations",
    "WorkloadDeploy",
    "WorkloadPostDeployTasks",
    "WorkloadPostDeployEvaluations",
)


@pytest.fixture
def shard() -> str:
    return f"trace-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def namespace(namespace_factory: Callable[..., Awaitable[str]], shard: str) -> str:
    """A fresh namespace that only this test's aggregator and scheduler manage."""
    return await namespace_factory({AGGREGATOR_SHARD: shard, SCHEDULER_SHARD: shard})


def _common(bus_settings: BusSettings, cluster_settings: ClusterSettings) -> dict[str, Any]:
    return {
        "instance_id": f"test-{uuid.uuid4().hex[:6]}",
        "bus": bus_settings,
        "cluster": cluster_settings,
        "observability": ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        "shutdown": ShutdownSettings(grace_seconds=5),
    }


async def _replicaset(cluster: k8s.ClusterClient, namespace: str, name: str) -> dict[str, Any]:
    """A Deployment without replicas, and the ReplicaSet its controller makes (the owner of
    its pods, which is what the webhook reports)."""
    labels = {"app": name}
    await cluster.create(
        k8s.DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
                },
            },
        },
        namespace,
    )

    async def find() -> dict[str, Any] | None:
        for rs in (await cluster.list(k8s.REPLICASETS, namespace)).items:
            if any(o["name"] == name for o in rs["metadata"].get("ownerReferences") or []):
                found: dict[str, Any] = rs
                return found
        return None

    return await eventually(find, timeout=30, what=f"the ReplicaSet of {name}")


async def _ready(context: ServiceContext[Any]) -> bool:
    return all((await context.readiness.evaluate()).values())


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name"))


async def test_an_app_versions_spans_in_the_aggregator_and_the_scheduler_share_one_trace(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    exporter = InMemorySpanExporter()
    processors: list[SpanProcessor] = [SimpleSpanProcessor(exporter)]
    aggregator_settings = AppAggregatorSettings(
        **_common(bus_settings, cluster_settings),
        aggregation=AggregationSettings(
            namespace=namespace,
            shard=shard,
            keptn_config_namespace=namespace,
            resync_seconds=2.0,
            retry_delays=(0.2, 0.5, 1.0),
        ),
    )
    scheduler_settings = SchedulerSettings(
        **_common(bus_settings, cluster_settings),
        scheduler=LifecycleSettings(
            namespace=namespace,
            shard=shard,
            resync_seconds=5.0,
            retry_delays=(0.2, 0.5, 1.0),
            consumer_group=f"klt-scheduler-{shard}",
        ),
    )
    rs = await _replicaset(cluster, namespace, "web")
    admitted = events.PodAdmitted(
        namespace=namespace,
        app="web",
        pod_name=f"web-{uuid.uuid4().hex[:5]}",
        pod_uid=str(uuid.uuid4()),
        owner=events.OwnerRef(
            kind="ReplicaSet",
            name=rs["metadata"]["name"],
            uid=rs["metadata"]["uid"],
            api_version="apps/v1",
        ),
        workload="web-web",
        version="1.2.0",
        app_type_single_service=True,
        admitted_at=datetime.now(UTC),
    )

    async with (
        running(
            aggregator_settings,
            aggregator_setup,
            tracer_provider=make_tracer_provider("app-aggregator", processors=processors),
        ) as aggregator,
        running(
            scheduler_settings,
            scheduler_setup,
            tracer_provider=make_tracer_provider("scheduler", processors=processors),
        ) as scheduler,
        bus.Publisher(bus_settings, client_id="webhook-stand-in") as publisher,
    ):
        for service in (aggregator, scheduler):
            await eventually(functools.partial(_ready, service.context), what="readiness")
        await publisher.publish(admitted, source="/klt/webhook")

        async def finished() -> dict[str, Any] | None:
            for kav in (await cluster.list(KAV, namespace)).items:
                if (kav.get("status") or {}).get("status") == "Succeeded":
                    return kav
            return None

        kav = await eventually(finished, what="the app version to succeed")
        name = kav["metadata"]["name"]

        def by_service() -> dict[str, dict[str, ReadableSpan]]:
            spans: dict[str, dict[str, ReadableSpan]] = {}
            for span in exporter.get_finished_spans():
                spans.setdefault(_service(span), {})[span.name] = span
            return spans

        async def all_exported() -> dict[str, dict[str, ReadableSpan]] | None:
            spans = by_service()
            return spans if name in spans.get("scheduler", {}) else None

        spans = await eventually(all_exported, what="the scheduler's span of the app version")

    aggregated, scheduled = spans["app-aggregator"], spans["scheduler"]

    # The aggregator starts the version's trace: a new root named after the version (Keptn's
    # KeptnApp controller does the same), created while it creates the version.
    origin = aggregated[name]
    assert origin.parent is None
    assert origin.kind is SpanKind.SERVER
    assert origin.attributes is not None
    assert origin.attributes["keptn.deployment.app.name"] == "web"
    assert origin.attributes["keptn.deployment.app.version"] == "1.2.0"
    assert origin.attributes["keptn.deployment.app.namespace"] == namespace
    assert "create_app_version" in aggregated
    trace_id = origin.context.trace_id
    _, kav_trace, kav_parent, _ = kav["spec"]["traceId"]["traceparent"].split("-")
    assert (kav_trace, kav_parent) == (f"{trace_id:032x}", f"{origin.context.span_id:016x}")

    # The scheduler continues it: the version's root span is the aggregator span's child, and
    # every phase and the workload version (with its phases) are in the same trace.
    root = scheduled[name]
    assert root.parent is not None
    assert root.parent.span_id == origin.context.span_id
    assert root.attributes is not None
    assert root.attributes["keptn.deployment.app.name"] == "web"
    assert root.attributes["keptn.deployment.app.version"] == "1.2.0"
    expected = [
        name,
        *APP_PHASES,
        "web-web-1.2.0",
        *(f"web-web/{phase}" for phase in WORKLOAD_PHASES),
    ]
    for span_name in expected:
        assert span_name in scheduled, span_name
        assert scheduled[span_name].context.trace_id == trace_id, span_name
    workload_deploy = scheduled["web-web/WorkloadDeploy"]
    assert workload_deploy.attributes is not None
    assert workload_deploy.attributes["keptn.deployment.workload.name"] == "web-web"
    assert {
        _service(s) for s in exporter.get_finished_spans() if s.context.trace_id == trace_id
    } == {
        "app-aggregator",
        "scheduler",
    }
