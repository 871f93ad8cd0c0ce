"""Workload discovery end to end on the local stack: real workloads are created through the
apiserver, which calls the stack's webhook over TLS; the stack's app-aggregator builds the Keptn
objects from the bus. Names and fields are the reference's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery as d

T = TypeVar("T")
KW = k8s.keptn_resource("KeptnWorkload")
KWV = k8s.keptn_resource("KeptnWorkloadVersion")
KAPP = k8s.keptn_resource("KeptnApp")
KAV = k8s.keptn_resource("KeptnAppVersion")
KACTX = k8s.keptn_resource("KeptnAppContext")


async def _eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 60) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.25)


@pytest.fixture
async def enabled(cluster: k8s.ClusterClient, namespace: str) -> str:
    await cluster.patch(
        k8s.NAMESPACES, namespace, {"metadata": {"annotations": {d.NAMESPACE_ENABLED: "enabled"}}}
    )
    await asyncio.sleep(1)  # the webhook's namespace cache follows by watch
    return namespace


def _template(annotations: dict[str, str], labels: dict[str, str], image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"component": "x", **labels}, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def _workload(
    kind: str,
    name: str,
    annotations: dict[str, str],
    labels: dict[str, str] | None = None,
    image: str = "nginx:1.27",
) -> dict[str, Any]:
    labels = labels or {}
    template = _template(annotations, labels, image)
    template["metadata"]["labels"]["component"] = name
    spec: dict[str, Any] = {"selector": {"matchLabels": {"component": name}}, "template": template}
    if kind != "DaemonSet":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


RESOURCES = {
    "Deployment": k8s.DEPLOYMENTS,
    "StatefulSet": k8s.STATEFULSETS,
    "DaemonSet": k8s.DAEMONSETS,
}


async def _pods_of(cluster: k8s.ClusterClient, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = await cluster.list(k8s.PODS, namespace, label_selector=f"component={name}")
    return pods.items


def _gated(pod: dict[str, Any]) -> bool:
    gates = [g.get("name") for g in pod["spec"].get("schedulingGates") or []]
    removed = (pod["metadata"].get("annotations") or {}).get(d.GATE_REMOVED)
    return d.SCHEDULING_GATE in gates or removed == "true"


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
async def test_an_annotated_workload_is_gated_and_becomes_keptn_objects(
    kind: str, cluster: k8s.ClusterClient, enabled: str
) -> None:
    ns = enabled
    annotations = {d.WORKLOAD: "waiter", d.VERSION: "0.4.0_1", d.METADATA: "team=kitchen"}
    await cluster.create(RESOURCES[kind], _workload(kind, "waiter", annotations), ns)
    pods = await _eventually(lambda: _pods_of(cluster, ns, "waiter"))
    assert all(_gated(p) for p in pods), [p["spec"].get("schedulingGates") for p in pods]
    assert pods[0]["metadata"]["annotations"][d.APP] == "waiter"

    workload = await _eventually(lambda: cluster.get_or_none(KW, "waiter-waiter", ns))
    spec = workload["spec"]
    assert (spec["app"], spec["version"]) == ("waiter", "0.4.0_1")
    assert spec["metadata"] == {"team": "kitchen"}
    owner_kind = "ReplicaSet" if kind == "Deployment" else kind
    assert spec["resourceReference"]["kind"] == owner_kind
    kwv = await _eventually(lambda: cluster.get_or_none(KWV, "waiter-waiter-0.4.0-1", ns))
    assert kwv["spec"]["workloadName"] == "waiter-waiter"
    app = await _eventually(lambda: cluster.get_or_none(KAPP, "waiter", ns))
    assert app["metadata"]["labels"][d.MANAGED_BY_LABEL] == d.MANAGED_BY_KEPTN
    assert app["spec"]["workloads"] == [{"name": "waiter", "version": "0.4.0_1"}]
    assert app["spec"]["version"] == "0.4.0_1"
    kav = await _eventually(
        lambda: cluster.get_or_none(KAV, "waiter-0.4.0_1-6b86b273".replace("_", "-"), ns)
    )
    assert kav["spec"]["appName"] == "waiter"


async def test_recommended_labels_and_a_container_version_are_understood(
    cluster: k8s.ClusterClient, enabled: str
) -> None:
    ns = enabled
    labels = {d.K8S_WORKLOAD: "cart"}
    await cluster.create(
        k8s.DEPLOYMENTS,
        _workload("Deployment", "cart", {d.CONTAINER: "main"}, labels, image="repo/cart:2.1.0"),
        ns,
    )
    kwv = await _eventually(lambda: cluster.get_or_none(KWV, "cart-cart-2.1.0", ns))
    assert kwv["spec"]["version"] == "2.1.0"


async def test_a_multi_service_app_waits_for_the_discovery_window_and_merges_its_context(
    cluster: k8s.ClusterClient, enabled: str
) -> None:
    ns = enabled
    await cluster.create(
        KACTX,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnAppContext",
            "metadata": {"name": "shop"},
            "spec": {"metadata": {"commit": "abc"}, "postDeploymentTasks": ["notify"]},
        },
        ns,
    )
    for name, version in (("web", "1.0"), ("api", "2.0")):
        annotations = {d.APP: "shop", d.WORKLOAD: name, d.VERSION: version}
        await cluster.create(k8s.DEPLOYMENTS, _workload("Deployment", name, annotations), ns)
    await _eventually(lambda: cluster.get_or_none(KWV, "shop-api-2.0", ns))
    await _eventually(lambda: cluster.get_or_none(KWV, "shop-web-1.0", ns))
    assert await cluster.get_or_none(KAPP, "shop", ns) is None  # the window has not passed
    app = await _eventually(lambda: cluster.get_or_none(KAPP, "shop", ns), timeout=90)
    assert [w["name"] for w in app["spec"]["workloads"]] == ["api", "web"]
    assert len(app["spec"]["version"]) == 10
    kav = await _eventually(
        lambda: cluster.get_or_none(KAV, f"shop-{app['spec']['version']}-6b86b273", ns)
    )
    assert kav["spec"]["metadata"] == {"commit": "abc"}
    assert kav["spec"]["postDeploymentTasks"] == ["notify"]


async def test_workloads_in_namespaces_that_did_not_opt_in_are_left_alone(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    annotations = {d.WORKLOAD: "plain", d.VERSION: "1"}
    await cluster.create(k8s.DEPLOYMENTS, _workload("Deployment", "plain", annotations), namespace)
    pods = await _eventually(lambda: _pods_of(cluster, namespace, "plain"))
    assert not any(_gated(p) for p in pods)
    await asyncio.sleep(2)
    assert (await cluster.list(KW, namespace)).items == []
