"""Restarts, lost events, several replicas and revisions: the status in the cluster decides.

- A scheduler restarted mid-lifecycle resumes from the status and repeats nothing.
- A KeptnTask created just before a crash (not yet recorded in the status) is adopted, not
  duplicated: its name is derived, not random.
- Without a single Kafka event, the watches alone carry a lifecycle to the end.
- Two schedulers in one consumer group never apply a transition twice: every phase change is
  announced once and every finished version counted once across both.
- A revision bump deprecates the older revision, which then stops.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from scheduler_kit import (
    EVALUATION_DEFINITIONS,
    EVALUATIONS,
    KAV,
    KWV,
    RUNNER_CLASS,
    TASK_DEFINITIONS,
    TASKS,
    Aggregator,
    Runner,
    Workload,
    auto_runner,
    checks_of,
    evaluation_definition,
    get_status,
    read_phase_changes,
    replicaset,
    running_scheduler,
    task_definition,
    wait_check,
    wait_status,
)

from klt_common.clients import cluster as k8s
from klt_common.structs import events
from klt_scheduler import machine
from klt_scheduler.settings import SchedulerSettings


def _with(settings: SchedulerSettings, **changes: Any) -> SchedulerSettings:
    return settings.model_copy(update={"scheduler": settings.scheduler.model_copy(update=changes)})


async def test_a_restarted_scheduler_resumes_without_repeating_work(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
) -> None:
    for name in ("app-pre", "wl-pre", "wl-post"):
        await cluster.create(TASK_DEFINITIONS, task_definition(name), namespace)
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)
    web = Workload("web", "1", "ReplicaSet", rs, pre_tasks=["wl-pre"], post_tasks=["wl-post"])
    async with running_scheduler(settings):
        kav = await aggregator.create_app_version(
            "shop", "1", [web], preDeploymentTasks=["app-pre"]
        )
        kwv = await aggregator.create_workload_version("shop", web)
        app_task = await wait_check(cluster, TASKS, namespace, kav, "app-pre")
        await runner.finish_task(app_task["metadata"]["name"])
        wl_task = await wait_check(cluster, TASKS, namespace, kwv, "wl-pre")
        await wait_status(
            cluster, KWV, kwv, namespace, lambda s: bool(s.get("preDeploymentTaskStatus"))
        )
    # Down: the task finishes meanwhile and its TaskFinished waits on the topic.
    before = await get_status(cluster, KWV, kwv, namespace)
    await runner.finish_task(wl_task["metadata"]["name"])
    async with running_scheduler(settings), auto_runner(runner, {"wl-post": "Succeeded"}):
        await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
        )
    after = await get_status(cluster, KWV, kwv, namespace)
    assert after["status"] == "Succeeded"
    # The same task, the same phase spans: nothing was started a second time.
    owned = await checks_of(cluster, TASKS, namespace, kwv)
    assert sorted(t["spec"]["taskDefinition"] for t in owned) == ["wl-post", "wl-pre"]
    assert wl_task["metadata"]["name"] in {t["metadata"]["name"] for t in owned}
    assert len(await checks_of(cluster, TASKS, namespace, kav)) == 1
    assert after["startTime"] == before["startTime"]
    assert (
        after["phaseTraceIDs"]["WorkloadPreDeployTasks"]
        == before["phaseTraceIDs"]["WorkloadPreDeployTasks"]
    )


async def test_a_task_created_before_a_crash_is_adopted_not_duplicated(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("app-pre"), namespace)
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web", gated=False), namespace)
    web = Workload("web", "1", "ReplicaSet", rs)
    kav = await aggregator.create_app_version(
        "shop", "1", [web], preDeploymentTasks=["app-pre"], announce=False
    )
    await aggregator.create_workload_version("shop", web, announce=False)
    # What a scheduler that crashed right after creating the task (before recording it in
    # the status) leaves behind.
    obj = await cluster.get(KAV, kav, namespace)
    name = machine.check_name("pre", "app-pre", obj["metadata"]["uid"], "AppPreDeployTasks")
    await cluster.create(
        TASKS,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnTask",
            "metadata": {
                "name": name,
                "labels": dict(RUNNER_CLASS),
                "ownerReferences": [
                    {
                        "apiVersion": "lifecycle.keptn.sh/v1",
                        "kind": "KeptnAppVersion",
                        "name": kav,
                        "uid": obj["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"taskDefinition": "app-pre", "checkType": "pre"},
        },
        namespace,
    )
    async with running_scheduler(settings), auto_runner(runner, {"app-pre": "Succeeded"}):
        status = await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
        )
    assert [i["name"] for i in status["preDeploymentTaskStatus"]] == [name]
    assert [t["metadata"]["name"] for t in await checks_of(cluster, TASKS, namespace, kav)] == [
        name
    ]


async def test_without_any_event_the_watches_carry_the_lifecycle_to_the_end(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("wl-pre"), namespace)
    await cluster.create(EVALUATION_DEFINITIONS, evaluation_definition("wl-pre-eval"), namespace)
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web"), namespace)
    web = Workload(
        "web", "1", "ReplicaSet", rs, pre_tasks=["wl-pre"], pre_evaluations=["wl-pre-eval"]
    )
    slow = _with(settings, resync_seconds=600.0)
    async with (
        running_scheduler(slow),
        auto_runner(runner, {"wl-pre": "Succeeded", "wl-pre-eval": "Succeeded"}, announce=False),
    ):
        kav = await aggregator.create_app_version("shop", "1", [web], announce=False)
        await aggregator.create_workload_version("shop", web, announce=False)
        await wait_status(
            cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=60
        )


async def test_two_schedulers_in_one_group_never_apply_a_transition_twice(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    for name in ("pre", "post"):
        await cluster.create(TASK_DEFINITIONS, task_definition(name), namespace)
    await cluster.create(EVALUATION_DEFINITIONS, evaluation_definition("gate"), namespace)
    apps = [f"app{n}" for n in range(6)]
    verdicts = {"pre": "Succeeded", "post": "Succeeded", "gate": "Succeeded"}
    # A short resync, so both replicas also race on every object all the time.
    racing = _with(settings, resync_seconds=0.5)
    async with (
        running_scheduler(racing) as first,
        running_scheduler(racing) as second,
        auto_runner(runner, verdicts),
    ):
        names: list[tuple[str, str]] = []
        for app in apps:
            rs = await cluster.create(k8s.REPLICASETS, replicaset(app), namespace)
            workload = Workload(
                "web", "1", "ReplicaSet", rs, pre_tasks=["pre"], pre_evaluations=["gate"]
            )
            kav = await aggregator.create_app_version(
                app, "1", [workload], preDeploymentTasks=["pre"], postDeploymentTasks=["post"]
            )
            kwv = await aggregator.create_workload_version(app, workload)
            names.append((kav, kwv))
        for kav, _ in names:
            await wait_status(
                cluster, KAV, kav, namespace, lambda s: s.get("status") == "Succeeded", timeout=90
            )
        await asyncio.sleep(1.5)  # let both replicas resync over the finished objects
    for kav, kwv in names:
        assert len(await checks_of(cluster, TASKS, namespace, kav)) == 2
        assert len(await checks_of(cluster, TASKS, namespace, kwv)) == 1
        assert len(await checks_of(cluster, EVALUATIONS, namespace, kwv)) == 1

    # Every finished version counted once, across both replicas.
    def total(metric: str) -> float:
        return sum(
            s.value
            for scheduler in (first, second)
            for family in scheduler.registry.collect()
            for s in family.samples
            if s.name == metric
        )

    assert total("keptn_app_count_total") == len(apps)
    assert total("keptn_deployment_count_total") == len(apps)

    # Every phase change announced once.
    expected = {kav for kav, _ in names} | {kwv for _, kwv in names}

    def complete(seen: list[events.PhaseChanged]) -> bool:
        done = {d.object_name for d in seen if d.phase == "Completed"}
        return expected <= done

    changes = await read_phase_changes(kafka_bootstrap, topic_prefix, until=complete, timeout=30)
    counts = collections.Counter((d.object_name, d.phase, d.state) for d in changes)
    repeated = {k: v for k, v in counts.items() if v > 1}
    assert not repeated
    assert {d.object_name for d in changes if d.phase == "Completed"} == expected


async def test_a_revision_bump_deprecates_the_older_revision_which_stops(
    cluster: k8s.ClusterClient,
    namespace: str,
    aggregator: Aggregator,
    runner: Runner,
    settings: SchedulerSettings,
) -> None:
    await cluster.create(TASK_DEFINITIONS, task_definition("hold"), namespace)
    await cluster.create(TASK_DEFINITIONS, task_definition("go"), namespace)
    rs = await cluster.create(k8s.REPLICASETS, replicaset("web", gated=False), namespace)
    web = Workload("web", "1", "ReplicaSet", rs)
    async with running_scheduler(settings):
        first = await aggregator.create_app_version(
            "shop", "1", [web], preDeploymentTasks=["hold"], generation=1
        )
        await wait_check(cluster, TASKS, namespace, first, "hold")
        second = await aggregator.create_app_version(
            "shop", "1", [web], preDeploymentTasks=["go"], generation=2
        )
        await aggregator.create_workload_version("shop", web)
        status = await wait_status(
            cluster, KAV, first, namespace, lambda s: s.get("status") == "Deprecated"
        )
        for field in (
            "preDeploymentStatus",
            "preDeploymentEvaluationStatus",
            "workloadOverallStatus",
            "postDeploymentStatus",
            "postDeploymentEvaluationStatus",
            "promotionStatus",
        ):
            assert status[field] == "Deprecated", field
        async with auto_runner(runner, {"go": "Succeeded", "hold": "Succeeded"}):
            await wait_status(
                cluster, KAV, second, namespace, lambda s: s.get("status") == "Succeeded"
            )
            await asyncio.sleep(0.5)
        # The deprecated revision stays deprecated, even though its task finished.
        assert (await get_status(cluster, KAV, first, namespace))["status"] == "Deprecated"
