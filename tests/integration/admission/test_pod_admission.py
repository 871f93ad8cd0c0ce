"""Pod admission decisions against the real apiserver's state: which pods are gated, with
which names and annotations, what is announced on the bus, and what is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import aiohttp
import pytest
from admission_kit import RunningWebhook, start_webhook

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import ClusterSettings
from klt_common.structs import discovery as d
from klt_common.structs import events
from klt_webhook.settings import PodAdmissionSettings

GATE = [{"name": d.SCHEDULING_GATE}]


@pytest.fixture
async def enabled_namespace(cluster: k8s.ClusterClient, namespace: str) -> str:
    await cluster.patch(
        k8s.NAMESPACES, namespace, {"metadata": {"annotations": {d.NAMESPACE_ENABLED: "enabled"}}}
    )
    return namespace


async def _synced(webhook: RunningWebhook, namespace: str, *, enabled: bool = True) -> None:
    for _ in range(100):
        ns = webhook.mutator.namespaces.get(namespace)
        annotations = ((ns or {}).get("metadata") or {}).get("annotations") or {}
        if ns is not None and (annotations.get(d.NAMESPACE_ENABLED) == "enabled") == enabled:
            return
        await asyncio.sleep(0.05)


def _review(namespace: str, pod: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "object": pod,
        },
    }


def _pod(
    owner: dict[str, Any],
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    image: str = "nginx:1.27",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{owner['name']}-",
            "annotations": annotations or {},
            "labels": labels or {},
            "ownerReferences": [owner],
        },
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def _rs_owner(name: str = "web-abc") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": name,
        "uid": str(uuid.uuid4()),
        "controller": True,
    }


async def _admit(webhook: RunningWebhook, review: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(webhook.url, json=review) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["response"]["uid"] == review["request"]["uid"]
    return dict(body["response"])


def _patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the response's JSON patch (only the 'add' ops the webhook emits)."""
    result = json.loads(json.dumps(pod))
    if "patch" not in response:
        return result
    for op in json.loads(base64.b64decode(response["patch"])):
        assert op["op"] == "add"
        *parents, leaf = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        target = result
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = op["value"]
    return result


async def test_an_annotated_pod_is_gated_and_announced(
    webhook: RunningWebhook, enabled_namespace: str
) -> None:
    await _synced(webhook, enabled_namespace)
    owner = _rs_owner()
    pod = _pod(
        owner,
        {
            d.WORKLOAD: "waiter",
            d.APP: "shop",
            d.VERSION: "0.4.0_1",
            d.PRE_TASKS: "check-entry",
            d.METADATA: "team=payments",
        },
    )
    response = await _admit(webhook, _review(enabled_namespace, pod))
    assert response["allowed"] is True
    assert _patched(pod, response)["spec"]["schedulingGates"] == GATE

    received: list[events.Envelope[events.PodAdmitted]] = []
    done = asyncio.Event()
    consumer = bus.Consumer(webhook.bus, group_id=f"t-{uuid.uuid4().hex[:6]}", client_id="t")

    async def on_admitted(env: events.Envelope[events.PodAdmitted], _: bus.Coordinates) -> None:
        if env.data.namespace == enabled_namespace:
            received.append(env)
            done.set()

    consumer.register(events.PodAdmitted, on_admitted)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        stop.set()
        await task
    event = received[0].data
    assert (event.app, event.workload, event.version) == ("shop", "shop-waiter", "0.4.0_1")
    assert event.owner.uid == owner["uid"]
    assert event.pre_deployment_tasks == ("check-entry",)
    assert event.metadata == {"team": "payments"}
    assert not event.app_type_single_service
    assert received[0].partitionkey == f"{enabled_namespace}/shop"


async def test_recommended_labels_and_a_container_version_are_understood(
    webhook: RunningWebhook, enabled_namespace: str
) -> None:
    await _synced(webhook, enabled_namespace)
    pod = _pod(
        _rs_owner(),
        {d.CONTAINER: "main"},
        labels={d.K8S_WORKLOAD: "cart", d.K8S_APP: "shop"},
        image="repo/cart:2.1.0",
    )
    response = await _admit(webhook, _review(enabled_namespace, pod))
    patched = _patched(pod, response)
    assert patched["spec"]["schedulingGates"] == GATE
    assert patched["metadata"]["annotations"][d.VERSION] == "2.1.0"


async def test_a_bare_pod_inherits_its_deployments_keys(
    webhook: RunningWebhook, enabled_namespace: str, cluster: k8s.ClusterClient
) -> None:
    await _synced(webhook, enabled_namespace)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "annotations": {
                d.WORKLOAD: "web",
                d.APP: "shop",
                d.VERSION: "1.2",
                d.POST_TASKS: "notify",
            },
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
            },
        },
    }
    await cluster.create(k8s.DEPLOYMENTS, deployment, enabled_namespace)
    rs = None
    for _ in range(100):
        listed = await cluster.list(k8s.REPLICASETS, enabled_namespace)
        if listed.items:
            rs = listed.items[0]
            break
        await asyncio.sleep(0.1)
    assert rs is not None, "the controller-manager created no ReplicaSet"
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs["metadata"]["name"],
        "uid": rs["metadata"]["uid"],
        "controller": True,
    }
    pod = _pod(owner)
    response = await _admit(webhook, _review(enabled_namespace, pod))
    patched = _patched(pod, response)
    assert patched["spec"]["schedulingGates"] == GATE
    assert patched["metadata"]["annotations"] == {
        d.WORKLOAD: "web",
        d.APP: "shop",
        d.POST_TASKS: "notify",
    }


async def test_disabled_namespaces_unannotated_pods_and_updates_are_left_alone(
    webhook: RunningWebhook, enabled_namespace: str
) -> None:
    await _synced(webhook, enabled_namespace)
    annotated = _pod(_rs_owner(), {d.WORKLOAD: "w", d.VERSION: "1"})
    for review in (
        _review(enabled_namespace, _pod(_rs_owner())),
        _review(enabled_namespace, annotated, operation="UPDATE"),
        _review(
            enabled_namespace,
            _pod(
                {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"},
                {d.WORKLOAD: "w"},
            ),
        ),
        _review("no-such-namespace-xyz", annotated),
    ):
        response = await _admit(webhook, review)
        assert response["allowed"] is True
        assert "patch" not in response


async def test_pods_of_a_version_whose_prechecks_passed_are_not_gated(
    webhook: RunningWebhook, enabled_namespace: str, cluster: k8s.ClusterClient
) -> None:
    await _synced(webhook, enabled_namespace)
    kwv = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnWorkloadVersion",
        "metadata": {"name": "shop-api-3.0"},
        "spec": {
            "app": "shop",
            "version": "3.0",
            "workloadName": "shop-api",
            "resourceReference": {"uid": "x", "kind": "ReplicaSet", "name": "api-1"},
        },
    }
    await cluster.create(k8s.keptn_resource("KeptnWorkloadVersion"), kwv, enabled_namespace)
    await cluster.patch_status(
        k8s.keptn_resource("KeptnWorkloadVersion"),
        "shop-api-3.0",
        {"preDeploymentStatus": "Succeeded", "preDeploymentEvaluationStatus": "Succeeded"},
        enabled_namespace,
    )
    pod = _pod(_rs_owner("api-1"), {d.WORKLOAD: "api", d.APP: "shop", d.VERSION: "3.0"})
    for _ in range(100):
        cached = webhook.mutator.workload_versions.get("shop-api-3.0", enabled_namespace)
        if cached and (cached.get("status") or {}).get("preDeploymentEvaluationStatus"):
            break
        await asyncio.sleep(0.05)
    response = await _admit(webhook, _review(enabled_namespace, pod))
    assert "schedulingGates" not in _patched(pod, response)["spec"]


async def test_keys_that_give_no_valid_name_are_refused_with_what_to_fix(
    webhook: RunningWebhook, enabled_namespace: str
) -> None:
    await _synced(webhook, enabled_namespace)
    bad_container = _pod(_rs_owner(), {d.WORKLOAD: "w", d.CONTAINER: "db"})
    response = await _admit(webhook, _review(enabled_namespace, bad_container))
    assert response["allowed"] is False
    assert "names container 'db'" in response["status"]["message"]
    long_version = _pod(_rs_owner(), {d.WORKLOAD: "w", d.VERSION: "v" * 260})
    response = await _admit(webhook, _review(enabled_namespace, long_version))
    assert response["allowed"] is False
    assert "not a valid Kubernetes name" in response["status"]["message"]


async def test_malformed_requests_get_a_400_not_a_500(webhook: RunningWebhook) -> None:
    async with aiohttp.ClientSession() as http:
        for body in (b"not json", b"[]", b'{"request": 5}'):
            async with http.post(webhook.url, data=body) as r:
                assert r.status == 400


async def test_admission_answers_while_events_cannot_be_published(
    kafka_bootstrap: str,
    cluster_settings: ClusterSettings,
    cluster: k8s.ClusterClient,
    enabled_namespace: str,
) -> None:
    del cluster
    running, thread, loop, stop = start_webhook(
        kafka_bootstrap, cluster_settings, PodAdmissionSettings(event_queue_size=2), publish=False
    )
    try:
        await _synced(running, enabled_namespace)
        for n in range(5):
            pod = _pod(_rs_owner(f"w{n}"), {d.WORKLOAD: f"w{n}", d.VERSION: "1"})
            response = await _admit(running, _review(enabled_namespace, pod))
            assert _patched(pod, response)["spec"]["schedulingGates"] == GATE
        metrics = running.url.replace("/mutate-v1-pod", "/metrics")
        async with aiohttp.ClientSession() as http, http.get(metrics) as r:
            text = await r.text()
        assert "klt_webhook_events_dropped_total 3.0" in text
        assert 'klt_webhook_admissions_total{result="gated"} 5.0' in text
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
