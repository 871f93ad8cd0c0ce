"""The webhook is down and its failurePolicy is Ignore: pods run, and their workloads are still
discovered by the app-aggregator's reconciliation.

The test registers a pod webhook of its own that points at a dead address, with failurePolicy
Ignore, for its namespace only: the apiserver calls it, fails, and admits the pods unchanged.
The stack's own webhook must stay up for everyone else's tests, so the namespace opts in
(``keptn.sh/lifecycle-toolkit: enabled``) only once the pods exist: until then the stack's
webhook leaves them alone too, which is exactly what an unreachable webhook with Ignore leaves
behind (pods neither gated nor annotated in an opted-in namespace).

The suite's own aggregator, scheduler and task-runner (the ``fleet``) then find the workload
from its pods and owners, and its lifecycle runs: KeptnWorkload, KeptnWorkloadVersion, the
pre-deployment task, the app version, to Completed. The pods run throughout and are never gated.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from faults_kit import (
    KAV,
    KW,
    KWV,
    TASKS,
    Scope,
    ServiceProcess,
    create_checks,
    eventually,
    free_port,
    outcome,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery as d

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _deployment(name: str) -> dict[str, Any]:
    labels = {"component": name}
    annotations = {d.WORKLOAD: name, d.VERSION: "2.1", d.PRE_TASKS: "pre-ok"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }


def _dead_webhook(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "mpod.faults.klt.sh",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 2,
                "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/mutate"},
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace},
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
            }
        ],
    }


async def _running_pods(cluster: k8s.ClusterClient, ns: str) -> list[dict[str, Any]]:
    pods = (await cluster.list(k8s.PODS, ns, label_selector="component=menu")).items
    return (
        pods if len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods) else []
    )


async def test_pods_admitted_without_the_webhook_run_and_are_discovered(
    cluster: k8s.ClusterClient,
    scope: Scope,
    fleet: dict[str, ServiceProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = scope.namespace
    started = time.monotonic()
    webhook = f"faults-dead-{ns}"
    await cluster.create(k8s.MUTATING_WEBHOOKS, _dead_webhook(webhook, ns))
    try:
        await create_checks(cluster, scope)
        # The fleet's aggregator resyncs every 2 s, so its periodic discovery comes quickly.
        assert fleet["app-aggregator"].extra_env["KLT_AGGREGATION__RESYNC_SECONDS"] == "2"
        await cluster.create(k8s.DEPLOYMENTS, _deployment("menu"), ns)
        pods = await eventually(
            lambda: _running_pods(cluster, ns), timeout=120, what="the pods to run"
        )
        for pod in pods:
            assert not pod["spec"].get("schedulingGates"), pod["spec"]
            # Nothing mutated them: the webhook adds keptn.sh/app to every pod it admits.
            assert d.APP not in (pod["metadata"].get("annotations") or {})
        assert (await cluster.list(KW, ns)).items == []
        aggregator = fleet["app-aggregator"]
        repairs = (await aggregator.metrics()).get("klt_aggregator_repairs_total", 0.0)

        await cluster.patch(
            k8s.NAMESPACES, ns, {"metadata": {"annotations": {d.NAMESPACE_ENABLED: "enabled"}}}
        )
        workload = await eventually(
            lambda: cluster.get_or_none(KW, "menu-menu", ns),
            timeout=60,
            what="the KeptnWorkload",
        )
        assert workload["spec"]["version"] == "2.1"
        assert workload["spec"]["resourceReference"]["kind"] == "ReplicaSet"
        # It was the reconciler that found it (no PodAdmitted event exists for these pods).
        after_repairs = (await aggregator.metrics()).get("klt_aggregator_repairs_total", 0.0)
        assert after_repairs > repairs, (repairs, after_repairs)

        async def finished() -> tuple[str, str] | None:
            kwv = await cluster.get_or_none(KWV, "menu-menu-2.1", ns)
            kavs = (await cluster.list(KAV, ns)).items
            if outcome(kwv) and kavs and outcome(kavs[0]):
                return outcome(kwv) or "", outcome(kavs[0]) or ""
            return None

        ends = await eventually(finished, timeout=180, what="the lifecycle to finish")
        assert ends == ("Succeeded", "Succeeded")
        tasks = (await cluster.list(TASKS, ns)).items
        assert [(t["spec"]["taskDefinition"], t["status"]["status"]) for t in tasks] == [
            ("pre-ok", "Succeeded")
        ]
        # The same pods ran throughout: nothing was deleted or gated to catch up.
        after = await _running_pods(cluster, ns)
        assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in pods}
    finally:
        await cluster.delete(k8s.MUTATING_WEBHOOKS, webhook)
    with capsys.disabled():
        print(
            f"\n[faults:webhook-down] discovered and completed in {time.monotonic() - started:.0f}s"
        )
