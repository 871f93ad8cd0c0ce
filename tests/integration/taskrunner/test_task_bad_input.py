"""Bad input ends in a clear status and a Kubernetes Event, never in a crash or a retry storm."""

from __future__ import annotations

import asyncio

from taskrunner_kit import (
    create_definition,
    create_task,
    events_of,
    jobs_of,
    make_settings,
    new_class,
    task_runner,
    task_status,
    wait_event,
    wait_status,
    watch_finished,
)

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings


async def test_a_missing_definition_keeps_the_task_pending_until_it_appears(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)) as running:
        task = await create_task(cluster, namespace, "pre-later", "defined-later", runner_class)
        status = await wait_status(
            cluster, namespace, "pre-later", until=("Pending",), check=lambda s: "reason" in s
        )
        event = await wait_event(cluster, namespace, "pre-later", "CreateTaskNotFound")
        assert status["reason"] == "TaskDefinitionNotFound"
        assert "could not find KeptnTaskDefinition: defined-later" in status["message"]
        assert event["type"] == "Warning"
        assert event["message"].startswith("Create Task: could not find KeptnTaskDefinition")
        # The slow timer runs every second in tests: several passes must neither write nor
        # record anything new while nothing changed.
        version = (await cluster.get(k8s.keptn_resource("KeptnTask"), "pre-later", namespace))[
            "metadata"
        ]["resourceVersion"]
        await asyncio.sleep(3)
        again = await cluster.get(k8s.keptn_resource("KeptnTask"), "pre-later", namespace)
        assert again["metadata"]["resourceVersion"] == version
        assert len(await events_of(cluster, namespace, "pre-later")) == 1
        assert not await jobs_of(cluster, namespace, task)
        assert not running.task.done()

        await create_definition(
            cluster,
            namespace,
            "defined-later",
            {"container": {"name": "c", "image": "busybox:1.36", "command": ["true"]}},
        )
        final = await wait_status(cluster, namespace, "pre-later", timeout=30)
    assert final["status"] == "Succeeded"
    assert "reason" not in final
    assert "message" not in final


async def test_a_definition_with_two_runtimes_fails_the_task_with_keptns_message(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    spec = {
        "deno": {"inline": {"code": "console.log(1)"}},
        "container": {"name": "c", "image": "busybox:1.36"},
    }
    refusal = ""
    try:
        await create_definition(cluster, namespace, "ambiguous", spec)
    except k8s.ApiError as refused:
        refusal = refused.message
    if refusal:
        # With klt's admission webhook installed the apiserver refuses it up front.
        assert "Only one of Container, Python, or Deno" in refusal
        return
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(make_settings(bus_settings, cluster_settings, runner_class)),
    ):
        task = await create_task(cluster, namespace, "pre-ambiguous", "ambiguous", runner_class)
        status = await wait_status(cluster, namespace, "pre-ambiguous")
        event = await finished.wait_for("pre-ambiguous")
        recorded = await wait_event(cluster, namespace, "pre-ambiguous", "CreateTaskFailed")
    assert status["status"] == "Failed"
    assert status["reason"] == "InvalidTaskDefinition"
    assert "Only one of Container, Python, or Deno field can be defined" in status["message"]
    assert (event.state, event.reason) == ("Failed", "InvalidTaskDefinition")
    assert recorded["type"] == "Warning"
    assert not await jobs_of(cluster, namespace, task)


async def _stuck_then_failed(
    cluster: k8s.ClusterClient, namespace: str, name: str, expected: str
) -> dict[str, object]:
    waiting = await wait_status(
        cluster,
        namespace,
        name,
        until=("Progressing",),
        check=lambda s: s.get("reason") == "CreateContainerConfigError",
        timeout=30,
    )
    assert expected in str(waiting["message"]), waiting
    await wait_event(cluster, namespace, name, "ReconcileTaskReconcileError")
    return await wait_status(cluster, namespace, name, timeout=60)


async def test_a_missing_secret_is_reported_and_fails_the_task_after_its_timeout(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(
        cluster,
        namespace,
        "needs-secret",
        {
            "deno": {
                "inline": {"code": "console.log(Deno.env.get('SECURE_DATA'))"},
                "secureParameters": {"secret": "not-there"},
            }
        },
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(
            cluster, namespace, "pre-secret", "needs-secret", runner_class, timeout="5s"
        )
        final = await _stuck_then_failed(cluster, namespace, "pre-secret", 'secret "not-there"')
    assert final["status"] == "Failed"
    assert final["reason"] == "DeadlineExceeded"
    message = str(final["message"])
    assert message.startswith("Job was active longer than specified deadline")
    assert "CreateContainerConfigError" in message
    assert 'secret "not-there"' in message


async def test_a_missing_code_config_map_is_reported_and_fails_the_task_after_its_timeout(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(
        cluster, namespace, "needs-code", {"python": {"configMapRef": {"name": "no-such-code"}}}
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(cluster, namespace, "pre-code", "needs-code", runner_class, timeout="5s")
        final = await _stuck_then_failed(cluster, namespace, "pre-code", "no-such-code")
    assert final["status"] == "Failed"
    assert final["reason"] == "DeadlineExceeded"
    assert "no-such-code" in str(final["message"])


async def test_an_unreachable_http_ref_fails_the_task_with_the_runtimes_output(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    url = "http://127.0.0.1:9/nothing-here.py"
    await create_definition(cluster, namespace, "remote", {"python": {"httpRef": {"url": url}}})
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(cluster, namespace, "post-remote", "remote", runner_class, retries=0)
        final = await wait_status(cluster, namespace, "post-remote", timeout=60)
    assert final["status"] == "Failed"
    assert final["reason"] == "BackoffLimitExceeded"
    assert f"could not fetch {url}" in final["logTail"]


async def test_a_deleted_job_fails_its_task_instead_of_running_it_twice(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(
        cluster,
        namespace,
        "long",
        {"container": {"name": "c", "image": "busybox:1.36", "command": ["sleep", "60"]}},
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        task = await create_task(cluster, namespace, "pre-long", "long", runner_class)
        running = await wait_status(cluster, namespace, "pre-long", until=("Progressing",))
        await cluster.delete(k8s.JOBS, str(running["jobName"]), namespace)
        final = await wait_status(cluster, namespace, "pre-long")
        await asyncio.sleep(1)
        assert not await jobs_of(cluster, namespace, task)
    assert final["status"] == "Failed"
    assert final["reason"] == "JobNotFound"
    assert (await task_status(cluster, namespace, "pre-long"))["status"] == "Failed"
