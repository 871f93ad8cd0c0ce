"""KeptnConfig and settings that change the lifecycle: missing definitions, non-blocking mode,
the deploy timeout, promotion tasks."""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_kit import (
    CONFIGS,
    EVALUATION_DEFINITIONS,
    KAV,
    KWV,
    TASK_DEFINITIONS,
    TASKS,
    Aggregator,
    Runner,
    RunningScheduler,
    Workload,
    auto_runner,
    checks_of,
    evaluation_definition,
    eventually,
    gates_of,
    get_status,
    keptn_config,
    pods_of,
    reasons_of,
    replicaset,
    running_scheduler,
    task_definition,
    wait_status,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery
from klt_scheduler.settings import SchedulerSettings


async def _gated_rs(
    cluster: k8s.ClusterClient, namespace: str, name: str, **template: Any
) -> dict[str, Any]:
    rs = await cluster.create(k8s.REPLICASETS, replicaset(name, **template), namespace)

    async def pods() -> list[dict[str, Any]] | None:
        return await pods_of(cluster, namespace, rs["metadata"]["uid"]) or None

    await eventually(pods, what="the ReplicaSet's pod")
    return rs


async def test_a_missing_task_definition_leaves_the_phase_pending_until_it_appears(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    rs = await _gated_rs(cluster, namespace, "web")
    web = Workload("web", "1", "ReplicaSet", rs, pre_tasks=["later"])
    kav = await aggregator.create_app_version("shop", "1", [web], preDeploymentTasks=["absent"])
    kwv = await aggregator.create_workload_version("shop", web)
    status = await wait_status(
        cluster, KAV, kav, namespace, lambda s: s.get("currentPhase") == "AppPreDeployTasks"
    )
    assert status["preDeploymentStatus"] == "Pending"
    assert status["status"] == "Progressing"
    assert not status.get("preDeploymentTaskStatus")
    assert await checks_of(cluster, TASKS, namespace, kav) == []

    async def told() -> set[str] | None:
        reasons = await reasons_of(cluster, namespace, kav)
        return reasons if "CreateTaskNotFound" in reasons else None

    await eventually(told, what="the CreateTaskNotFound event")

    # The definition appears: the phase goes on at once (the definition's watch event).
    await cluster.create(TASK_DEFINITIONS, task_definition("absent"), namespace)
    async with auto_runner(runner, {"absent": "Succeeded"}):
        status = await wait_status(
            cluster,
            KWV,
            kwv,
            namespace,
            lambda s: s.get("currentPhase") == "WorkloadPreDeployTasks",
        )
        assert status["preDeploymentStatus"] == "Pending"
        assert await checks_of(cluster, TASKS, namespace, kwv) == []
        [pod] = await pods_of(cluster, namespace, rs["metadata"]["uid"])
        assert discovery.SCHEDULING_GATE in gates_of(pod)
        # The app aggregates its workload's state a watch event later.
        kav_status = await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("workloadOverallStatus") == "Progressing"
        )
        assert kav_status["currentPhase"] == "AppDeploy"


async def test_a_definition_in_the_keptn_namespace_is_used_as_a_fallback(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    settings: SchedulerSettings,
) -> None:
    # The scheduler's "Keptn namespace" is a second test namespace here.
    keptn_ns = f"{namespace}-keptn"
    await cluster.create(
        k8s.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": keptn_ns}}
    )
    try:
        await cluster.create(TASK_DEFINITIONS, task_definition("shared"), keptn_ns)
        local = settings.model_copy(
            update={"cluster": settings.cluster.model_copy(update={"namespace": keptn_ns})}
        )
        async with running_scheduler(local):
            rs = await _gated_rs(cluster, namespace, "web", gated=False)
            web = Workload("web", "1", "ReplicaSet", rs)
            kav = await aggregator.create_app_version(
                "shop", "1", [web], preDeploymentTasks=["shared"]
            )

            async def task() -> list[dict[str, Any]] | None:
                return await checks_of(cluster, TASKS, namespace, kav) or None

            [created] = await eventually(task, what="the task from the shared definition")
            assert created["spec"]["taskDefinition"] == "shared"
    finally:
        await cluster.delete(k8s.NAMESPACES, keptn_ns)


async def test_non_blocking_mode_turns_failures_into_warnings_and_the_app_succeeds(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    await cluster.create(CONFIGS, keptn_config(blockDeployment=False), namespace)
    for name in ("app-pre", "wl-pre"):
        await cluster.create(TASK_DEFINITIONS, task_definition(name), namespace)
    for name in ("app-pre-eval", "wl-post-eval"):
        await cluster.create(EVALUATION_DEFINITIONS, evaluation_definition(name), namespace)
    rs = await _gated_rs(cluster, namespace, "web")
    web = Workload(
        "web", "1", "ReplicaSet", rs, pre_tasks=["wl-pre"], post_evaluations=["wl-post-eval"]
    )
    kav = await aggregator.create_app_version(
        "shop",
        "1",
        [web],
        preDeploymentTasks=["app-pre"],
        preDeploymentEvaluations=["app-pre-eval"],
    )
    kwv = await aggregator.create_workload_version("shop", web)
    verdicts = {
        "app-pre": "Failed",
        "app-pre-eval": "Failed",
        "wl-pre": "Failed",
        "wl-post-eval": "Failed",
    }
    async with auto_runner(runner, verdicts):
        status = await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
        )
    assert status["preDeploymentStatus"] == "Warning"
    assert status["preDeploymentEvaluationStatus"] == "Warning"
    assert status["workloadOverallStatus"] == "Succeeded"
    assert status["currentPhase"] == "Completed"
    kwv_status = await get_status(cluster, KWV, kwv, namespace)
    assert kwv_status["status"] == "Succeeded"
    assert kwv_status["preDeploymentStatus"] == "Warning"
    assert kwv_status["deploymentStatus"] == "Succeeded"
    assert kwv_status["postDeploymentEvaluationStatus"] == "Warning"
    # Warning counts as passed for the gate too.
    [pod] = await pods_of(cluster, namespace, rs["metadata"]["uid"])
    assert not gates_of(pod)


async def test_a_workload_that_never_becomes_ready_fails_after_the_observability_timeout(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    await cluster.create(CONFIGS, keptn_config(observabilityTimeout="2s"), namespace)
    await cluster.create(TASK_DEFINITIONS, task_definition("wl-post"), namespace)
    # No node matches: the pod is released but never scheduled, so never Ready.
    rs = await _gated_rs(cluster, namespace, "web", nodeSelector={"klt.test/nowhere": "true"})
    web = Workload("web", "1", "ReplicaSet", rs, post_tasks=["wl-post"])
    kav = await aggregator.create_app_version("shop", "1", [web])
    kwv = await aggregator.create_workload_version("shop", web)
    status = await wait_status(
        cluster, KWV, kwv, namespace, lambda s: s.get("deploymentStatus") == "Progressing"
    )
    assert status["currentPhase"] == "WorkloadDeploy"
    status = await wait_status(
        cluster, KWV, kwv, namespace, lambda s: s.get("status") == "Failed", timeout=15
    )
    assert status["deploymentStatus"] == "Failed"
    assert status["postDeploymentStatus"] == "Deprecated"
    assert status["postDeploymentEvaluationStatus"] == "Deprecated"
    assert await checks_of(cluster, TASKS, namespace, kwv) == []
    kav_status = await wait_status(
        cluster, KAV, kav, namespace, lambda s: s.get("status") == "Failed"
    )
    assert kav_status["workloadOverallStatus"] == "Failed"

    async def told() -> set[str] | None:
        reasons = await reasons_of(cluster, namespace, kwv)
        return reasons if {"WorkloadDeployFinished", "WorkloadDeployFailed"} <= reasons else None

    await eventually(told, what="the timeout events")
    timeout_event = next(
        e
        for e in (
            await cluster.list(k8s.EVENTS, namespace, field_selector=f"involvedObject.name={kwv}")
        ).items
        if e["reason"] == "WorkloadDeployFinished"
    )
    assert timeout_event["type"] == "Warning"
    assert timeout_event["message"].startswith("Workload Deployment: has reached timeout / ")


@pytest.mark.parametrize("enabled", [True, False], ids=["promotion-on", "promotion-off"])
async def test_promotion_tasks_run_last_only_when_enabled(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
    enabled: bool,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("promote"), namespace)
    local = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"promotion_tasks_enabled": enabled})
        }
    )
    async with running_scheduler(local) as scheduler, auto_runner(runner, {"promote": "Succeeded"}):
        rs = await _gated_rs(cluster, namespace, "web", gated=False)
        web = Workload("web", "1", "ReplicaSet", rs)
        kav = await aggregator.create_app_version("shop", "1", [web], promotionTasks=["promote"])
        await aggregator.create_workload_version("shop", web)
        status = await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
        )
        promoted = await checks_of(cluster, TASKS, namespace, kav)
        labels = {
            "keptn_deployment_app_name": "shop",
            "keptn_deployment_app_version": "1",
            "keptn_deployment_app_namespace": namespace,
            "keptn_deployment_app_status": "Succeeded",
        }
        if enabled:
            assert status["promotionStatus"] == "Succeeded"
            assert [t["spec"]["checkType"] for t in promoted] == ["promotion"]
            assert promoted[0]["metadata"]["name"].startswith("promotion-promote-")
            assert "PromotionTasks" in status["phaseTraceIDs"]
            assert scheduler.metric("keptn_promotion_count_total", **labels) == 1
        else:
            assert status["promotionStatus"] == "Pending"
            assert promoted == []
            assert scheduler.metric("keptn_promotion_count_total", **labels) == 0
