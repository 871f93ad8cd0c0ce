"""Failing checks at app and workload level: the states and cascades Keptn writes.

A failed phase fails its version and marks every later phase Deprecated; a failed workload
fails its app's AppDeploy. Failed pre-deployment checks keep the workload's pods gated (Keptn
releases them, keptn#3920). Each case runs the whole stack of app and workload version, with
one check failing and every other succeeding.
"""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_kit import (
    EVALUATION_DEFINITIONS,
    KAV,
    KWV,
    TASK_DEFINITIONS,
    Aggregator,
    Runner,
    RunningScheduler,
    Workload,
    auto_runner,
    evaluation_definition,
    eventually,
    gates_of,
    get_status,
    pods_of,
    reasons_of,
    replicaset,
    task_definition,
    wait_status,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery

S, F, D, P = "Succeeded", "Failed", "Deprecated", "Pending"

APP_FIELDS = (
    "preDeploymentStatus",
    "preDeploymentEvaluationStatus",
    "workloadOverallStatus",
    "postDeploymentStatus",
    "postDeploymentEvaluationStatus",
    "promotionStatus",
)
WORKLOAD_FIELDS = (
    "preDeploymentStatus",
    "preDeploymentEvaluationStatus",
    "deploymentStatus",
    "postDeploymentStatus",
    "postDeploymentEvaluationStatus",
)
DEFINITIONS = {
    "tasks": ["app-pre", "app-post", "wl-pre", "wl-post"],
    "evaluations": ["app-pre-eval", "app-post-eval", "wl-pre-eval", "wl-post-eval"],
}


async def _setup(
    cluster: k8s.ClusterClient, namespace: str, aggregator: Aggregator
) -> tuple[str, str, dict[str, Any]]:
    for name in DEFINITIONS["tasks"]:
        await cluster.create(TASK_DEFINITIONS, task_definition(name), namespace)
    for name in DEFINITIONS["evaluations"]:
        await cluster.create(EVALUATION_DEFINITIONS, evaluation_definition(name), namespace)
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)

    async def gated() -> list[dict[str, Any]] | None:
        return await pods_of(cluster, namespace, rs["metadata"]["uid"]) or None

    await eventually(gated, what="the gated pod")
    web = Workload(
        "web",
        "1",
        "ReplicaSet",
        rs,
        pre_tasks=["wl-pre"],
        post_tasks=["wl-post"],
        pre_evaluations=["wl-pre-eval"],
        post_evaluations=["wl-post-eval"],
    )
    kav = await aggregator.create_app_version(
        "shop",
        "1",
        [web],
        preDeploymentTasks=["app-pre"],
        postDeploymentTasks=["app-post"],
        preDeploymentEvaluations=["app-pre-eval"],
        postDeploymentEvaluations=["app-post-eval"],
    )
    kwv = await aggregator.create_workload_version("shop", web)
    return kav, kwv, rs


@pytest.mark.parametrize(
    ("failing", "app", "workload", "app_event", "released"),
    [
        pytest.param(
            "app-pre",
            (F, D, D, D, D, D),
            None,
            "AppPreDeployTasksFailed",
            False,
            id="app-pre-task",
        ),
        pytest.param(
            "app-pre-eval",
            (S, F, D, D, D, D),
            None,
            "AppPreDeployEvaluationsFailed",
            False,
            id="app-pre-evaluation",
        ),
        pytest.param(
            "wl-pre",
            (S, S, F, D, D, D),
            (F, D, D, D, D),
            "AppDeployFailed",
            False,
            id="workload-pre-task",
        ),
        pytest.param(
            "wl-pre-eval",
            (S, S, F, D, D, D),
            (S, F, D, D, D),
            "AppDeployFailed",
            False,
            id="workload-pre-evaluation",
        ),
        pytest.param(
            "wl-post",
            (S, S, F, D, D, D),
            (S, S, S, F, D),
            "AppDeployFailed",
            True,
            id="workload-post-task",
        ),
        pytest.param(
            "wl-post-eval",
            (S, S, F, D, D, D),
            (S, S, S, S, F),
            "AppDeployFailed",
            True,
            id="workload-post-evaluation",
        ),
        pytest.param(
            "app-post",
            (S, S, S, F, D, D),
            (S, S, S, S, S),
            "AppPostDeployTasksFailed",
            True,
            id="app-post-task",
        ),
        pytest.param(
            "app-post-eval",
            (S, S, S, S, F, D),
            (S, S, S, S, S),
            "AppPostDeployEvaluationsFailed",
            True,
            id="app-post-evaluation",
        ),
    ],
)
async def test_a_failing_check_fails_its_version_and_deprecates_the_later_phases(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    scheduler: RunningScheduler,
    failing: str,
    app: tuple[str, ...],
    workload: tuple[str, ...] | None,
    app_event: str,
    released: bool,
) -> None:
    kav, kwv, rs = await _setup(cluster, namespace, aggregator)
    verdicts = {name: S for names in DEFINITIONS.values() for name in names}
    verdicts[failing] = F
    async with auto_runner(runner, verdicts):
        status = await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == F, timeout=60
        )
        assert tuple(status[f] for f in APP_FIELDS) == app
        assert status["endTime"]
        if workload is None:
            # The app failed before its workloads could start: they wait, for ever, as in Keptn.
            kwv_status = await get_status(cluster, KWV, kwv, namespace)
            assert not kwv_status.get("currentPhase")
        else:
            kwv_status = await wait_status(
                cluster, KWV, kwv, namespace, lambda s: s.get("endTime") is not None
            )
            assert tuple(kwv_status[f] for f in WORKLOAD_FIELDS) == workload
            assert kwv_status["status"] == (F if F in workload else S)

    async def recorded() -> set[str] | None:
        # Events are recorded after the status write, in the background.
        reasons = await reasons_of(cluster, namespace, kav)
        return reasons if {app_event, "AppCompletedFailed"} <= reasons else None

    await eventually(recorded, what=f"the {app_event} and AppCompletedFailed events")
    pods = await pods_of(cluster, namespace, rs["metadata"]["uid"])
    assert pods
    for pod in pods:
        assert (discovery.SCHEDULING_GATE not in gates_of(pod)) is released
    if failing == "app-pre-eval":

        async def told() -> set[str] | None:
            found = await reasons_of(cluster, namespace, kwv)
            return found if "AppPreDeployEvaluationsFailed" in found else None

        await eventually(told, what="the workload's 'app has failed' event")
    # Nothing runs after the failure: the phases Deprecated never created a check.
    listed = await cluster.list(k8s.keptn_resource("KeptnTask"), namespace)
    definitions = {t["spec"]["taskDefinition"] for t in listed.items}
    if failing == "app-pre":
        assert definitions == {"app-pre"}
