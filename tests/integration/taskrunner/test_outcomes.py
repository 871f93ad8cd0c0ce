"""Job settings and outcomes: retries and timeouts end with Keptn's reasons and messages; TTL,
service account, token automount and image pull secrets reach the Job; labels and annotations
propagate; a definition is found in the klt namespace when the task's namespace has none.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from taskrunner_kit import (
    create_definition,
    create_task,
    jobs_of,
    make_settings,
    new_class,
    task_runner,
    wait_event,
    wait_status,
    watch_finished,
)

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings


def _busybox(script: str) -> dict[str, object]:
    return {"container": {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}}


async def test_a_task_that_keeps_failing_fails_with_backoff_limit_exceeded(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(cluster, namespace, "flaky", _busybox("echo attempt failed; exit 3"))
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(make_settings(bus_settings, cluster_settings, runner_class)),
    ):
        task = await create_task(cluster, namespace, "pre-flaky", "flaky", runner_class, retries=1)
        status = await wait_status(cluster, namespace, "pre-flaky")
        event = await finished.wait_for("pre-flaky")
        await wait_event(cluster, namespace, "pre-flaky", "ReconcileTaskFailed")
    assert status["status"] == "Failed"
    assert status["reason"] == "BackoffLimitExceeded"
    assert status["message"] == "Job has reached the specified backoff limit"
    assert "attempt failed" in status["logTail"]
    assert (event.state, event.reason, event.message) == (
        "Failed",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    [job] = await jobs_of(cluster, namespace, task)
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


async def test_a_task_that_runs_too_long_fails_with_deadline_exceeded(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(cluster, namespace, "slow", _busybox("echo started; sleep 60"))
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        task = await create_task(
            cluster, namespace, "post-slow", "slow", runner_class, timeout="3s"
        )
        status = await wait_status(cluster, namespace, "post-slow")
    assert status["status"] == "Failed"
    assert status["reason"] == "DeadlineExceeded"
    assert status["message"] == "Job was active longer than specified deadline"
    [job] = await jobs_of(cluster, namespace, task)
    assert job["spec"]["activeDeadlineSeconds"] == 3


async def test_job_settings_labels_and_annotations_come_from_definition_and_task(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await cluster.create(
        k8s.SERVICE_ACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "task-sa"}},
        namespace,
    )
    spec = {
        **_busybox("true"),
        "ttlSecondsAfterFinished": 120,
        "serviceAccount": {"name": "task-sa"},
        "automountServiceAccountToken": {"type": False},
        "imagePullSecrets": [{"name": "registry-credentials"}],
    }
    await create_definition(cluster, namespace, "configured", spec)
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        task = await create_task(
            cluster,
            namespace,
            "pre-configured",
            "configured",
            runner_class,
            labels={"team": "delivery"},
            annotations={"example.com/owner": "delivery-team"},
        )
        status = await wait_status(cluster, namespace, "pre-configured")
    assert status["status"] == "Succeeded", status
    [job] = await jobs_of(cluster, namespace, task)
    meta, pod = job["metadata"], job["spec"]["template"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    assert job["spec"]["backoffLimit"] == 10
    assert job["spec"]["activeDeadlineSeconds"] == 300
    assert pod["spec"]["serviceAccountName"] == "task-sa"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert meta["labels"]["team"] == "delivery"
    assert pod["metadata"]["labels"]["team"] == "delivery"
    assert pod["metadata"]["annotations"] == {"example.com/owner": "delivery-team"}
    assert {
        k: v for k, v in meta["annotations"].items() if k != "batch.kubernetes.io/job-tracking"
    } == {
        "example.com/owner": "delivery-team",
        "keptn.sh/app": "demo",
        "keptn.sh/workload": "demo-web",
        "keptn.sh/version": "1.0.0",
        "keptn.sh/task-name": "pre-configured",
    }
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "KeptnTask",
        "pre-configured",
        True,
    )


@pytest.mark.parametrize("ttl", [0, 1])
async def test_a_finished_job_removed_by_its_ttl_is_not_run_again(
    ttl: int,
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    """With a TTL of 0 the Job may be gone before the runner reads it: its last state, from
    the watch's DELETED event, still gives the outcome."""
    runner_class = new_class()
    await create_definition(
        cluster, namespace, "short-lived", {**_busybox("echo done"), "ttlSecondsAfterFinished": ttl}
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        task = await create_task(cluster, namespace, "pre-short", "short-lived", runner_class)
        status = await wait_status(cluster, namespace, "pre-short")
        assert status["status"] == "Succeeded"
        for _ in range(150):
            if not await jobs_of(cluster, namespace, task):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the TTL controller never removed the Job")
        await asyncio.sleep(2)
        assert not await jobs_of(cluster, namespace, task)
        final = await wait_status(cluster, namespace, "pre-short")
    assert final == status


@pytest.fixture
async def klt_namespace(cluster: k8s.ClusterClient) -> AsyncIterator[str]:
    name = f"t-klt-{uuid.uuid4().hex[:8]}"
    await cluster.create(
        k8s.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await cluster.delete(k8s.NAMESPACES, name)


async def test_definitions_fall_back_to_the_klt_namespace(
    cluster: k8s.ClusterClient,
    namespace: str,
    klt_namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    """A deno definition in the klt namespace runs in the task's namespace: its code is copied
    there (a pod cannot mount another namespace's ConfigMap). A local definition wins."""
    runner_class = new_class()
    await create_definition(
        cluster,
        klt_namespace,
        "shared-hello",
        {"deno": {"inline": {"code": 'console.log("shared code ran");'}}},
    )
    await create_definition(cluster, klt_namespace, "shared-box", _busybox("echo shared box"))
    await create_definition(cluster, klt_namespace, "both", _busybox("echo from klt namespace"))
    await create_definition(cluster, namespace, "both", _busybox("echo from task namespace"))
    settings = make_settings(
        bus_settings, cluster_settings, runner_class, klt_namespace=klt_namespace
    )
    async with task_runner(settings):
        for name, definition in (("t1", "shared-hello"), ("t2", "shared-box"), ("t3", "both")):
            await create_task(cluster, namespace, name, definition, runner_class)
        results = [await wait_status(cluster, namespace, name) for name in ("t1", "t2", "t3")]
    assert [r["status"] for r in results] == ["Succeeded"] * 3, results
    assert "shared code ran" in results[0]["logTail"]
    assert "shared box" in results[1]["logTail"]
    assert "from task namespace" in results[2]["logTail"]


async def test_a_standalone_task_without_any_event_is_picked_up_from_the_watch(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    """A user-created KeptnTask (or one whose TaskRequested was lost) runs all the same, and
    its TaskFinished still announces the result."""
    runner_class = new_class()
    await create_definition(cluster, namespace, "hello", _busybox("echo hello"))
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(make_settings(bus_settings, cluster_settings, runner_class)),
    ):
        await create_task(
            cluster,
            namespace,
            "standalone-hello",
            "hello",
            runner_class,
            context={"appName": "podtato-head", "appVersion": "0.3.1", "objectType": "App"},
        )
        status = await wait_status(cluster, namespace, "standalone-hello")
        event = await finished.wait_for("standalone-hello")
    assert status["status"] == "Succeeded"
    assert (event.app, event.workload, event.state) == ("podtato-head", None, "Succeeded")
