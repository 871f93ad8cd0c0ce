"""A whole app and workload lifecycle on the real stack, with the tests playing the other services.

Covered: the phase order of an app version and of a workload version, the workload waiting for
its app's pre-deployment evaluations, one KeptnTask/KeptnEvaluation per definition with Keptn's
spec and a deterministic name, the scheduling gate released as soon as the workload's
pre-deployment checks passed, readiness of ReplicaSets, StatefulSets and DaemonSets, Keptn's
Kubernetes Events, the PhaseChanged events on the bus, spans with Keptn's names and the
recorded phaseTraceIDs, and Keptn's metrics.
"""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_kit import (
    EVALUATION_DEFINITIONS,
    EVALUATIONS,
    EVALUATOR_SHARD,
    KAV,
    KWV,
    RUNNER_CLASS,
    TASK_DEFINITIONS,
    TASKS,
    Aggregator,
    Runner,
    RunningScheduler,
    Workload,
    daemonset,
    evaluation_definition,
    eventually,
    gates_of,
    get_status,
    pods_of,
    read_phase_changes,
    reasons_of,
    replicaset,
    statefulset,
    task_definition,
    wait_check,
    wait_status,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery, events


async def _create_all(
    cluster: k8s.ClusterClient, namespace: str, tasks: list[str], evals: list[str]
) -> None:
    for name in tasks:
        await cluster.create(TASK_DEFINITIONS, task_definition(name), namespace)
    for name in evals:
        await cluster.create(EVALUATION_DEFINITIONS, evaluation_definition(name), namespace)


async def _gated_pods(
    cluster: k8s.ClusterClient, namespace: str, uid: str, count: int
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pods = await pods_of(cluster, namespace, uid)
        gated = [p for p in pods if discovery.SCHEDULING_GATE in gates_of(p)]
        return gated if len(gated) >= count else None

    return await eventually(probe, what="gated pods")


async def test_an_app_with_checks_at_every_level_runs_every_phase_to_completed(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
) -> None:
    await _create_all(
        cluster,
        namespace,
        ["app-pre", "app-post", "wl-pre", "wl-post"],
        ["app-pre-eval", "app-post-eval", "wl-pre-eval", "wl-post-eval"],
    )
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)
    [pod] = await _gated_pods(cluster, namespace, rs["metadata"]["uid"], 1)
    web = Workload(
        "web",
        "1.0.0",
        "ReplicaSet",
        rs,
        pre_tasks=["wl-pre"],
        post_tasks=["wl-post"],
        pre_evaluations=["wl-pre-eval"],
        post_evaluations=["wl-post-eval"],
    )
    kav = await aggregator.create_app_version(
        "shop",
        "1.0.0",
        [web],
        preDeploymentTasks=["app-pre"],
        postDeploymentTasks=["app-post"],
        preDeploymentEvaluations=["app-pre-eval"],
        postDeploymentEvaluations=["app-post-eval"],
        metadata={"team": "shop", "commit": "abc123"},
    )
    kwv = await aggregator.create_workload_version("shop", web)

    # App pre-deployment task: one KeptnTask with Keptn's spec.
    task = await wait_check(cluster, TASKS, namespace, kav, "app-pre")
    assert task["metadata"]["name"].startswith("pre-app-pre-")
    assert task["metadata"]["labels"] == {"team": "checks", **RUNNER_CLASS}
    owner = task["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("KeptnAppVersion", kav, True)
    spec = task["spec"]
    assert (spec["checkType"], spec["retries"], spec["timeout"]) == ("pre", 2, "1m")
    context = spec["context"]
    # (The apiserver stores keys sorted; KEPTN_CONTEXT's key order is the task-runner's.)
    assert {k: v for k, v in context.items() if k != "metadata"} == {
        "workloadName": "",
        "appName": "shop",
        "appVersion": "1.0.0",
        "workloadVersion": "",
        "taskType": "pre",
        "objectType": "App",
    }
    assert context["metadata"]["team"] == "shop"
    assert context["metadata"]["traceparent"].startswith("00-")

    # The workload waits for the app's pre-deployment evaluations.
    status = await get_status(cluster, KWV, kwv, namespace)
    assert not status.get("currentPhase")
    await runner.finish_task(task["metadata"]["name"])
    evaluation = await wait_check(cluster, EVALUATIONS, namespace, kav, "app-pre-eval")
    assert evaluation["metadata"]["name"].startswith("pre-eval-app-pre-eval-")
    assert evaluation["metadata"]["labels"] == EVALUATOR_SHARD
    assert evaluation["spec"]["retries"] == 3
    assert evaluation["spec"]["retryInterval"] == "2s"
    assert evaluation["spec"]["appName"] == "shop"
    assert evaluation["spec"]["workloadVersion"] == ""
    status = await get_status(cluster, KWV, kwv, namespace)
    assert not status.get("currentPhase")
    assert discovery.SCHEDULING_GATE in gates_of(
        await cluster.get(k8s.PODS, pod["metadata"]["name"], namespace)
    )
    await runner.finish_evaluation(evaluation["metadata"]["name"])

    # The workload starts, with the app's metadata; its pre-deployment task runs.
    wl_task = await wait_check(cluster, TASKS, namespace, kwv, "wl-pre")
    assert wl_task["spec"]["context"]["objectType"] == "Workload"
    assert wl_task["spec"]["context"]["workloadName"] == "shop-web"
    assert wl_task["spec"]["context"]["workloadVersion"] == "1.0.0"
    assert wl_task["spec"]["context"]["appVersion"] == ""
    # (The task is created before the status that records it is written.)
    status = await wait_status(
        cluster, KWV, kwv, namespace, lambda s: bool(s.get("preDeploymentTaskStatus"))
    )
    assert status["appContextMetadata"] == {"team": "shop", "commit": "abc123"}
    assert status["currentPhase"] == "WorkloadPreDeployTasks"
    kav_status = await get_status(cluster, KAV, kav, namespace)
    assert kav_status["currentPhase"] == "AppDeploy"
    assert kav_status["preDeploymentStatus"] == "Succeeded"
    assert kav_status["preDeploymentEvaluationStatus"] == "Succeeded"
    await runner.finish_task(wl_task["metadata"]["name"])
    wl_eval = await wait_check(cluster, EVALUATIONS, namespace, kwv, "wl-pre-eval")
    assert discovery.SCHEDULING_GATE in gates_of(
        await cluster.get(k8s.PODS, pod["metadata"]["name"], namespace)
    )
    await runner.finish_evaluation(wl_eval["metadata"]["name"])

    # Pre-deployment checks passed: the gate goes, the pod runs, the ReplicaSet is available.
    async def ungated() -> dict[str, Any] | None:
        current = await cluster.get(k8s.PODS, pod["metadata"]["name"], namespace)
        return current if not gates_of(current) else None

    released = await eventually(ungated, what="the gate to be removed")
    assert released["metadata"]["annotations"][discovery.GATE_REMOVED] == "true"
    post = await wait_check(cluster, TASKS, namespace, kwv, "wl-post", timeout=60)
    status = await wait_status(
        cluster, KWV, kwv, namespace, lambda s: s.get("deploymentStatus") == "Succeeded"
    )
    assert status["deploymentStartTime"]
    await runner.finish_task(post["metadata"]["name"])
    post_eval = await wait_check(cluster, EVALUATIONS, namespace, kwv, "wl-post-eval")
    await runner.finish_evaluation(post_eval["metadata"]["name"])
    status = await wait_status(
        cluster, KWV, kwv, namespace, lambda s: s.get("status") == "Succeeded", what="KWV done"
    )
    assert status["currentPhase"] == "Completed"
    assert status["endTime"]
    for field in (
        "preDeploymentStatus",
        "preDeploymentEvaluationStatus",
        "deploymentStatus",
        "postDeploymentStatus",
        "postDeploymentEvaluationStatus",
    ):
        assert status[field] == "Succeeded", field

    # The app deploys when its workload has, then runs its post-deployment checks.
    app_post = await wait_check(cluster, TASKS, namespace, kav, "app-post")
    await runner.finish_task(app_post["metadata"]["name"])
    app_post_eval = await wait_check(cluster, EVALUATIONS, namespace, kav, "app-post-eval")
    await runner.finish_evaluation(app_post_eval["metadata"]["name"])
    kav_status = await wait_status(
        cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", what="KAV done"
    )
    assert kav_status["currentPhase"] == "Completed"
    assert kav_status["workloadOverallStatus"] == "Succeeded"
    assert kav_status["workloadStatus"] == [
        {"workload": {"name": "web", "version": "1.0.0"}, "status": "Succeeded"}
    ]
    assert kav_status["promotionStatus"] == "Pending"  # promotion is off by default
    items = kav_status["preDeploymentTaskStatus"]
    assert [(i["definitionName"], i["status"]) for i in items] == [("app-pre", "Succeeded")]
    assert items[0]["name"] == task["metadata"]["name"]
    assert items[0]["startTime"]
    assert items[0]["endTime"]

    # phaseTraceIDs: the root and every phase, as W3C traceparents of one trace.
    ids = kav_status["phaseTraceIDs"]
    assert set(ids) == {
        "",
        "AppPreDeployTasks",
        "AppPreDeployEvaluations",
        "AppDeploy",
        "AppPostDeployTasks",
        "AppPostDeployEvaluations",
    }
    trace_ids = {carrier["traceparent"].split("-")[1] for carrier in ids.values()}
    assert len(trace_ids) == 1
    kwv_ids = status["phaseTraceIDs"]
    assert {c["traceparent"].split("-")[1] for c in kwv_ids.values()} == trace_ids
    assert (
        task["spec"]["context"]["metadata"]["traceparent"]
        == ids["AppPreDeployTasks"]["traceparent"]
    )

    # Spans: Keptn's names, exported with the ids recorded in the status.
    async def spans_done() -> list[str] | None:
        names = scheduler.span_names()
        return names if kav in names else None

    names = await eventually(spans_done, what="the app version's span")
    for expected in (
        kav,
        "AppPreDeployTasks",
        "AppPreDeployEvaluations",
        "AppDeploy",
        "AppPostDeployTasks",
        "AppPostDeployEvaluations",
        kwv,
        "shop-web/WorkloadPreDeployTasks",
        "shop-web/WorkloadPreDeployEvaluations",
        "shop-web/WorkloadDeploy",
        "shop-web/WorkloadPostDeployTasks",
        "shop-web/WorkloadPostDeployEvaluations",
        task["metadata"]["name"],
    ):
        assert expected in names, expected
    spans = {s.name: s for s in scheduler.spans.get_finished_spans()}
    root = spans[kav]
    assert f"{root.context.span_id:016x}" == ids[""]["traceparent"].split("-")[2]
    phase_span = spans["AppDeploy"]
    assert phase_span.parent is not None
    assert phase_span.parent.span_id == root.context.span_id
    assert spans[kwv].parent is not None
    assert spans[kwv].parent.span_id == phase_span.context.span_id  # KWV under AppDeploy
    assert root.attributes["keptn.deployment.app.name"] == "shop"
    assert root.attributes["team"] == "shop"
    assert (
        spans["shop-web/WorkloadDeploy"].attributes["keptn.deployment.workload.name"] == "shop-web"
    )

    # Keptn's Kubernetes Events (recorded in the background, after each status write).
    expected_app = {"AppCompletedFinished"} | {
        f"{phase}{state}"
        for phase in (
            "AppPreDeployTasks",
            "AppPreDeployEvaluations",
            "AppDeploy",
            "AppPostDeployTasks",
            "AppPostDeployEvaluations",
        )
        for state in ("Started", "Finished")
    }
    expected_workload = {
        "WorkloadPreDeployTasksStarted",
        "WorkloadDeployFinished",
        "WorkloadCompletedFinished",
    }

    async def recorded(name: str, expected: set[str]) -> set[str] | None:
        reasons = await reasons_of(cluster, namespace, name)
        return reasons if expected <= reasons else None

    await eventually(lambda: recorded(kav, expected_app), what="the app's events")
    await eventually(lambda: recorded(kwv, expected_workload), what="the workload's events")
    event = next(
        e
        for e in await _events(cluster, namespace, kav)
        if e["reason"] == "AppPreDeployTasksStarted"
    )
    assert event["message"] == (
        f"App Pre-Deployment Tasks: has started / Namespace: {namespace}, Name: {kav}, "
        "Version: 1.0.0"
    )
    assert event["metadata"]["annotations"]["appName"] == "shop"
    assert event["source"]["component"] == "keptnappversion-controller"

    # Metrics.
    assert (
        scheduler.metric(
            "keptn_app_count_total",
            keptn_deployment_app_name="shop",
            keptn_deployment_app_version="1.0.0",
            keptn_deployment_app_namespace=namespace,
            keptn_deployment_app_status="Succeeded",
        )
        == 1
    )
    assert (
        scheduler.metric(
            "keptn_deployment_count_total",
            keptn_deployment_app_name="shop",
            keptn_deployment_workload_name="shop-web",
            keptn_deployment_workload_version="1.0.0",
            keptn_deployment_workload_namespace=namespace,
            keptn_deployment_workload_status="Succeeded",
        )
        == 1
    )
    assert (
        scheduler.metric(
            "keptn_deployment_duration_count",
            keptn_deployment_app_name="shop",
            keptn_deployment_workload_name="shop-web",
            keptn_deployment_workload_version="1.0.0",
            keptn_deployment_workload_namespace=namespace,
            keptn_deployment_workload_status="Succeeded",
        )
        == 1
    )
    assert (
        scheduler.metric(
            "keptn_app_active",
            keptn_deployment_app_name="shop",
            keptn_deployment_app_version="1.0.0",
            keptn_deployment_app_namespace=namespace,
        )
        == 0
    )

    # Exactly one task per definition and phase.
    for owner_name, count in ((kav, 2), (kwv, 2)):
        listed = await cluster.list(TASKS, namespace)
        owned = [
            t for t in listed.items if t["metadata"]["ownerReferences"][0]["name"] == owner_name
        ]
        assert len(owned) == count


async def _events(cluster: k8s.ClusterClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await cluster.list(k8s.EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return listed.items


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        pytest.param("StatefulSet", lambda: statefulset("db"), id="statefulset"),
        pytest.param("DaemonSet", lambda: daemonset("agent"), id="daemonset"),
    ],
)
async def test_statefulsets_and_daemonsets_are_released_and_deploy(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    scheduler: RunningScheduler,
    kind: str,
    make: Any,
) -> None:
    res = k8s.STATEFULSETS if kind == "StatefulSet" else k8s.DAEMONSETS
    obj = await cluster.create(res, make(), namespace)
    uid = obj["metadata"]["uid"]
    await _gated_pods(cluster, namespace, uid, 1)
    workload = Workload(obj["metadata"]["name"], "2", kind, obj)
    kav = await aggregator.create_app_version("infra", "2", [workload])
    kwv = await aggregator.create_workload_version("infra", workload)
    status = await wait_status(
        cluster,
        KWV,
        kwv,
        namespace,
        lambda s: s.get("status") == "Succeeded",
        timeout=60,
        what=f"{kind} workload done",
    )
    assert status["deploymentStatus"] == "Succeeded"
    pods = await pods_of(cluster, namespace, uid)
    assert pods
    assert all(not gates_of(p) for p in pods)
    await wait_status(cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded")


async def test_phase_changes_are_announced_once_each_in_order(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    scheduler: RunningScheduler,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    rs = await cluster.create(k8s.REPLICASETS, replicaset("api", gated=False), namespace)
    api = Workload("api", "3", "ReplicaSet", rs)
    kav = await aggregator.create_app_version("svc", "3", [api])
    kwv = await aggregator.create_workload_version("svc", api)
    await wait_status(
        cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
    )

    def complete(seen: list[events.PhaseChanged]) -> bool:
        done = {(d.object_name, d.phase) for d in seen if d.state == events.State.SUCCEEDED}
        return {(kav, "Completed"), (kwv, "Completed")} <= done

    changes = await read_phase_changes(kafka_bootstrap, topic_prefix, until=complete)
    seen = [(d.object_name, d.phase, str(d.state)) for d in changes]
    app = [(p, s) for n, p, s in seen if n == kav]
    assert app[-1] == ("Completed", "Succeeded")
    assert len(app) == len(set(app)), app
    phases = [p for p, _ in app]
    assert phases.index("AppPreDeployTasks") < phases.index("AppDeploy") < phases.index("Completed")
    workload = [(p, s) for n, p, s in seen if n == kwv]
    assert ("WorkloadDeploy", "Succeeded") in workload
    assert len(workload) == len(set(workload)), workload
