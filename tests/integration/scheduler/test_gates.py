"""The scheduling gate: released as soon as the pre-deployment checks pass, for every pod of the
workload version, including pods created afterwards; only klt's gate; never for pods whose
checks have not passed.

The resync is set far beyond the test's duration, so every release here is event-driven.
"""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_kit import (
    KWV,
    TASK_DEFINITIONS,
    Aggregator,
    Runner,
    RunningScheduler,
    Workload,
    auto_runner,
    eventually,
    gates_of,
    pods_of,
    replicaset,
    running_scheduler,
    statefulset,
    task_definition,
    wait_check,
    wait_status,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery
from klt_scheduler.settings import SchedulerSettings

TASKS = k8s.keptn_resource("KeptnTask")


@pytest.fixture
async def scheduler(settings: SchedulerSettings) -> Any:
    slow = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"resync_seconds": 600.0})}
    )
    async with running_scheduler(slow) as running:
        yield running


async def _pods(
    cluster: k8s.ClusterClient, namespace: str, uid: str, count: int, *, gated: bool | None = None
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in await pods_of(cluster, namespace, uid)
            if gated is None or (discovery.SCHEDULING_GATE in gates_of(p)) is gated
        ]
        return pods if len(pods) >= count else None

    return await eventually(probe, what=f"{count} pods (gated={gated})")


async def test_pods_created_after_the_checks_passed_are_released_at_once(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    scheduler: RunningScheduler,
) -> None:
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)
    uid = rs["metadata"]["uid"]
    await _pods(cluster, namespace, uid, 1, gated=True)
    web = Workload("web", "1", "ReplicaSet", rs)
    await aggregator.create_app_version("shop", "1", [web])
    kwv = await aggregator.create_workload_version("shop", web)
    await wait_status(cluster, KWV, kwv, namespace, lambda s: s.get("status") == "Succeeded")

    # Scale up: the new pods arrive gated and are released by the pod watch.
    await cluster.patch(k8s.REPLICASETS, "web", {"spec": {"replicas": 3}}, namespace)
    pods = await _pods(cluster, namespace, uid, 3, gated=False)
    for pod in pods:
        assert pod["metadata"]["annotations"][discovery.GATE_REMOVED] == "true"


async def test_only_klts_gate_is_removed(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    scheduler: RunningScheduler,
) -> None:
    body = replicaset("web")
    body["spec"]["template"]["spec"]["schedulingGates"].append({"name": "example.com/other"})
    rs = await cluster.create(k8s.REPLICASETS, body, namespace)
    uid = rs["metadata"]["uid"]
    await _pods(cluster, namespace, uid, 1, gated=True)
    web = Workload("web", "1", "ReplicaSet", rs)
    await aggregator.create_app_version("shop", "1", [web])
    await aggregator.create_workload_version("shop", web)
    [pod] = await _pods(cluster, namespace, uid, 1, gated=False)
    assert gates_of(pod) == ["example.com/other"]
    assert pod["metadata"]["annotations"][discovery.GATE_REMOVED] == "true"


async def test_pods_wait_for_their_own_workload_versions_checks(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("check"), namespace)
    web_rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)
    other_rs = await cluster.create(k8s.REPLICASETS, replicaset("other"), namespace)
    await _pods(cluster, namespace, web_rs["metadata"]["uid"], 1, gated=True)
    await _pods(cluster, namespace, other_rs["metadata"]["uid"], 1, gated=True)
    web = Workload("web", "1", "ReplicaSet", web_rs, pre_tasks=["check"])
    await aggregator.create_app_version("shop", "1", [web])
    kwv = await aggregator.create_workload_version("shop", web)
    task = await wait_check(cluster, TASKS, namespace, kwv, "check")
    [pod] = await pods_of(cluster, namespace, web_rs["metadata"]["uid"])
    assert discovery.SCHEDULING_GATE in gates_of(pod)
    await runner.finish_task(task["metadata"]["name"])
    await _pods(cluster, namespace, web_rs["metadata"]["uid"], 1, gated=False)
    await wait_status(cluster, KWV, kwv, namespace, lambda s: s.get("status") == "Succeeded")
    # A pod no workload version stands for is not klt's to release.
    [untouched] = await pods_of(cluster, namespace, other_rs["metadata"]["uid"])
    assert discovery.SCHEDULING_GATE in gates_of(untouched)


async def test_a_new_version_of_a_statefulset_gates_its_pods_until_its_own_checks_pass(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("migrate"), namespace)
    sts = await cluster.create(k8s.STATEFULSETS, statefulset("db"), namespace)
    uid = sts["metadata"]["uid"]
    v1 = Workload("db", "1", "StatefulSet", sts)
    await aggregator.create_app_version("data", "1", [v1])
    kwv1 = await aggregator.create_workload_version("data", v1)
    await wait_status(cluster, KWV, kwv1, namespace, lambda s: s.get("status") == "Succeeded")

    # Version 2 of the same StatefulSet (same uid) with a pre-deployment task.
    v2 = Workload("db", "2", "StatefulSet", sts, pre_tasks=["migrate"])
    await aggregator.create_app_version("data", "2", [v2])
    kwv2 = await aggregator.create_workload_version("data", v2)
    task = await wait_check(cluster, TASKS, namespace, kwv2, "migrate")
    # The rollout replaces the pod; the new one waits for version 2's task.
    [old] = await pods_of(cluster, namespace, uid)
    await cluster.delete(k8s.PODS, old["metadata"]["name"], namespace)

    async def replaced() -> list[dict[str, Any]] | None:
        pods = await pods_of(cluster, namespace, uid)
        fresh = [p for p in pods if p["metadata"]["uid"] != old["metadata"]["uid"]]
        return fresh or None

    [new] = await eventually(replaced, what="the replacement pod")
    assert discovery.SCHEDULING_GATE in gates_of(new)
    async with auto_runner(runner, {"migrate": "Succeeded"}):
        await _pods(cluster, namespace, uid, 1, gated=False)
        await wait_status(cluster, KWV, kwv2, namespace, lambda s: s.get("status") == "Succeeded")
    assert task["metadata"]["name"]
