"""One task, one Job: redelivered events, restarts mid-task and racing replicas never run a
task twice (Keptn re-runs tasks after an operator restart, keptn#3921)."""

from __future__ import annotations

import asyncio

from taskrunner_kit import (
    create_definition,
    create_task,
    jobs_of,
    make_settings,
    new_class,
    request,
    start,
    task_runner,
    wait_status,
    watch_finished,
)

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings

SLEEPY = {"container": {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3"]}}


async def test_the_same_task_requested_twice_creates_one_job(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(cluster, namespace, "sleepy", SLEEPY)
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(make_settings(bus_settings, cluster_settings, runner_class)),
    ):
        task = await create_task(cluster, namespace, "pre-twice", "sleepy", runner_class)
        await request(bus_settings, namespace, "pre-twice")
        await request(bus_settings, namespace, "pre-twice")
        status = await wait_status(cluster, namespace, "pre-twice")
        await request(bus_settings, namespace, "pre-twice")  # after the end, too
        await finished.wait_for("pre-twice")
        await asyncio.sleep(1)
        ids = {e.id for e in finished.for_task("pre-twice")}
    assert status["status"] == "Succeeded"
    assert len(await jobs_of(cluster, namespace, task)) == 1
    assert len(ids) == 1


async def test_a_restart_mid_task_adopts_the_running_job(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    settings = make_settings(bus_settings, cluster_settings, runner_class)
    await create_definition(cluster, namespace, "sleepy", SLEEPY)
    async with watch_finished(bus_settings) as finished:
        first = await start(settings)
        task = await create_task(cluster, namespace, "pre-restart", "sleepy", runner_class)
        await request(bus_settings, namespace, "pre-restart")
        progressing = await wait_status(cluster, namespace, "pre-restart", until=("Progressing",))
        await first.close()
        # The event is redelivered to nobody (it was committed), but the new process finds the
        # task in its watch and the Job by the task's uid.
        async with task_runner(settings):
            status = await wait_status(cluster, namespace, "pre-restart")
            event = await finished.wait_for("pre-restart")
    assert status["status"] == "Succeeded"
    assert status["jobName"] == progressing["jobName"]
    assert status["startTime"] == progressing["startTime"]
    assert event.state == "Succeeded"
    assert len(await jobs_of(cluster, namespace, task)) == 1


async def test_a_task_that_finished_while_no_runner_ran_is_reported_on_start(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    settings = make_settings(bus_settings, cluster_settings, runner_class)
    await create_definition(
        cluster,
        namespace,
        "quick",
        {"container": {"name": "c", "image": "busybox:1.36", "command": ["echo", "quick"]}},
    )
    async with watch_finished(bus_settings) as finished:
        first = await start(settings)
        task = await create_task(cluster, namespace, "pre-quick", "quick", runner_class)
        await wait_status(cluster, namespace, "pre-quick", until=("Progressing",))
        await first.close()
        for _ in range(150):
            [job] = await jobs_of(cluster, namespace, task)
            if any(c["type"] == "Complete" for c in job.get("status", {}).get("conditions") or []):
                break
            await asyncio.sleep(0.2)
        async with task_runner(settings):
            status = await wait_status(cluster, namespace, "pre-quick")
            await finished.wait_for("pre-quick")
    assert status["status"] == "Succeeded"
    assert "quick" in status["logTail"]
    assert len(await jobs_of(cluster, namespace, task)) == 1


async def test_two_replicas_racing_create_one_job_per_task(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    settings = make_settings(bus_settings, cluster_settings, runner_class)
    replica = settings.model_copy(update={"instance_id": "replica-2"})
    await create_definition(cluster, namespace, "sleepy", SLEEPY)
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(settings),
        task_runner(replica),
    ):
        names = [f"pre-race-{n}" for n in range(12)]
        tasks = await asyncio.gather(
            *(create_task(cluster, namespace, n, "sleepy", runner_class) for n in names)
        )
        await asyncio.gather(*(request(bus_settings, namespace, n) for n in names))
        statuses = [await wait_status(cluster, namespace, n) for n in names]
        for name in names:
            await finished.wait_for(name)
    assert [s["status"] for s in statuses] == ["Succeeded"] * len(names)
    for task in tasks:
        assert len(await jobs_of(cluster, namespace, task)) == 1
    for name in names:
        assert len({e.id for e in finished.for_task(name)}) == 1
