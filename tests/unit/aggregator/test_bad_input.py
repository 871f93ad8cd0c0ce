"""Bad input never crashes the aggregator or loops it: a KeptnAppContext that cannot be read
holds the app version back with one Warning Event (the user's checks must not be skipped), and
the version follows once the context is fixed; a gated pod whose keys give no valid name gets
a Warning Event on the pod.

These run the real ``Aggregator`` over a small in-memory stand-in for the cluster client (the
seam all I/O goes through), because a v1 apiserver refuses such a context outright: it can only
come from an older API version or a conversion gone wrong.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, cast

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from klt_app_aggregator import aggregator as agg
from klt_app_aggregator.settings import AggregationSettings
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder
from klt_common.structs import discovery as disc
from klt_common.structs import events


class FakeCluster:
    """The verbs the aggregator uses, over a dict; uids and resourceVersions are made up."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._counter = itertools.count(1)

    def _key(self, res: k8s.Resource, name: str, ns: str | None) -> tuple[str, str, str]:
        return (res.plural, ns or "", name)

    def put(self, res: k8s.Resource, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._counter)}")
        meta["resourceVersion"] = str(next(self._counter))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[self._key(res, meta["name"], meta.get("namespace"))] = stored
        return copy.deepcopy(stored)

    def of(self, res: k8s.Resource) -> list[dict[str, Any]]:
        return [o for (plural, _, _), o in self.objects.items() if plural == res.plural]

    async def get_or_none(self, res: k8s.Resource, name: str, ns: str | None = None) -> Any:
        found = self.objects.get(self._key(res, name, ns))
        return copy.deepcopy(found) if found is not None else None

    async def get(self, res: k8s.Resource, name: str, ns: str | None = None) -> Any:
        found = await self.get_or_none(res, name, ns)
        if found is None:
            raise k8s.NotFound(404, "NotFound", f"{res.plural} {name} not found")
        return found

    async def create(self, res: k8s.Resource, body: dict[str, Any], ns: str | None = None) -> Any:
        name = body["metadata"]["name"]
        if self._key(res, name, ns) in self.objects:
            raise k8s.AlreadyExists(409, "AlreadyExists", f"{name} exists")
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = ns
        return self.put(res, body)

    async def patch_status(
        self, res: k8s.Resource, name: str, status: dict[str, Any], ns: str | None = None
    ) -> Any:
        obj = await self.get(res, name, ns)
        obj["status"] = {**(obj.get("status") or {}), **status}
        return self.put(res, obj)

    async def list(self, res: k8s.Resource, ns: str | None = None, **_: Any) -> k8s.ObjectList:
        return k8s.ObjectList([copy.deepcopy(o) for o in self.of(res)], "1")


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[events.EventPayload, str | None]] = []

    async def publish(
        self, payload: events.EventPayload, *, source: str, event_id: str | None = None
    ) -> None:
        self.published.append((payload, event_id))


def _aggregator(cluster: FakeCluster, publisher: FakePublisher) -> agg.Aggregator:
    client = cast(k8s.ClusterClient, cluster)
    return agg.Aggregator(
        cluster=client,
        publisher=cast(bus.Publisher, publisher),
        settings=AggregationSettings(),
        source="/klt/app-aggregator",
        tracer=trace.NoOpTracer(),
        recorder=EventRecorder(client, component="klt-app-aggregator"),
        workloads=k8s.WatchCache(client, agg.KEPTN_WORKLOADS),
        apps=k8s.WatchCache(client, agg.KEPTN_APPS),
        requests=k8s.WatchCache(client, agg.KEPTN_APP_CREATION_REQUESTS),
        configs=k8s.WatchCache(client, agg.KEPTN_CONFIGS),
        namespaces=k8s.WatchCache(client, k8s.NAMESPACES),
        metrics=agg.Metrics(CollectorRegistry()),
    )


def _app(cluster: FakeCluster) -> dict[str, Any]:
    return cluster.put(
        agg.KEPTN_APPS,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnApp",
            "metadata": {"name": "shop", "namespace": "ns"},
            "spec": {
                "version": "1.0",
                "revision": 1,
                "workloads": [{"name": "web", "version": "1.0"}],
            },
        },
    )


def _context(cluster: FakeCluster, spec: dict[str, Any]) -> None:
    cluster.put(
        agg.KEPTN_APP_CONTEXTS,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnAppContext",
            "metadata": {"name": "shop", "namespace": "ns"},
            "spec": spec,
        },
    )


async def test_an_unreadable_context_holds_the_app_version_back_with_one_warning() -> None:
    cluster, publisher = FakeCluster(), FakePublisher()
    aggregator = _aggregator(cluster, publisher)
    app = _app(cluster)
    _context(cluster, {"preDeploymentTasks": "notify", "metadata": {"replicas": 3}})

    for _ in range(3):  # the resync tries again; the event is not repeated
        assert (
            await aggregator._ensure_app_version(await cluster.get(agg.KEPTN_APPS, "shop", "ns"))
            is False
        )

    await aggregator.close()  # events are recorded in the background
    assert cluster.of(agg.KEPTN_APP_VERSIONS) == []
    assert publisher.published == []
    assert not aggregator.is_confirmed(app)
    [event] = cluster.of(k8s.EVENTS)
    assert event["type"] == "Warning"
    assert event["reason"] == "CreateAppVersionFailed"
    assert event["involvedObject"] == {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnApp",
        "name": "shop",
        "namespace": "ns",
        "uid": app["metadata"]["uid"],
    }
    assert event["message"].startswith(
        "Create AppVersion: KeptnAppContext shop cannot be read: spec.preDeploymentTasks"
    )
    assert event["message"].endswith("/ Namespace: ns, Name: shop, Version: 1.0")

    _context(cluster, {"preDeploymentTasks": ["notify"]})
    assert await aggregator._ensure_app_version(await cluster.get(agg.KEPTN_APPS, "shop", "ns"))
    [kav] = cluster.of(agg.KEPTN_APP_VERSIONS)
    assert kav["metadata"]["name"] == "shop-1.0-6b86b273"
    assert kav["spec"]["preDeploymentTasks"] == ["notify"]
    assert (await cluster.get(agg.KEPTN_APPS, "shop", "ns"))["status"] == {"currentVersion": "1.0"}
    [(payload, event_id)] = publisher.published
    assert isinstance(payload, events.AppVersionCreated)
    assert payload.app_version_name == "shop-1.0-6b86b273"

    # Not picked up by a scheduler yet: announced again, under the same id.
    assert await aggregator._ensure_app_version(await cluster.get(agg.KEPTN_APPS, "shop", "ns"))
    assert len(cluster.of(agg.KEPTN_APP_VERSIONS)) == 1
    assert [i for _, i in publisher.published] == [event_id, event_id]


async def test_a_gated_pod_with_unusable_keys_gets_a_warning_on_the_pod() -> None:
    cluster, publisher = FakeCluster(), FakePublisher()
    aggregator = _aggregator(cluster, publisher)
    pod = cluster.put(
        k8s.PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "ns",
                "annotations": {disc.WORKLOAD: "web", disc.CONTAINER: "missing"},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s"}
                ],
            },
            "spec": {
                "schedulingGates": [{"name": disc.SCHEDULING_GATE}],
                "containers": [{"name": "main", "image": "web:1"}],
            },
        },
    )
    await aggregator.reconcile_pod(pod)
    await aggregator.reconcile_pod(pod)
    [event] = cluster.of(k8s.EVENTS)
    assert (event["type"], event["reason"]) == ("Warning", "CreateWorkloadFailed")
    assert event["involvedObject"]["kind"] == "Pod"
    assert "keptn.sh/container names container 'missing'" in event["message"]
    assert cluster.of(agg.KEPTN_WORKLOADS) == []
    assert publisher.published == []
