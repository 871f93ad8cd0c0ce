"""Running the task-runner in-process against the local stack, and reading what it did.

Each test runs its own task-runner with ``serve(...)``: its own topic prefix (so its events are
its own) and its own ``runner_class`` (so it owns exactly the KeptnTasks the test labels with
it). The stack's shared ``klt-task-runner`` process runs the unlabelled tasks only, so it never
touches a test's tasks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import serve
from klt_common.structs import events
from klt_task_runner.app import setup
from klt_task_runner.settings import TaskRunnerSettings, TaskSettings

TASKS = k8s.keptn_resource("KeptnTask")
DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
CLASS_LABEL = "klt.dev/runner-class"
UID_LABEL = "klt.dev/task-uid"

Body = dict[str, Any]


def new_class() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def make_settings(
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
    runner_class: str,
    *,
    klt_namespace: str = "klt-system",
    **tasks: Any,
) -> TaskRunnerSettings:
    return TaskRunnerSettings(
        service_name="task-runner-test",
        bus=bus_settings,
        cluster=cluster_settings.model_copy(update={"namespace": klt_namespace}),
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
        tasks=TaskSettings(runner_class=runner_class, pending_retry_seconds=1.0, **tasks),
    )


@dataclass
class Running:
    task: asyncio.Task[None]
    stop: asyncio.Event
    port: int

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def start(settings: TaskRunnerSettings) -> Running:
    """Start a task-runner and wait until it is ready (caches synced, partitions assigned)."""
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, setup, stop=stop, on_ready=port.set_result))
    done, _ = await asyncio.wait({task, port}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    running = Running(task, stop, await asyncio.wait_for(port, 1))
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            async with http.get(f"http://127.0.0.1:{running.port}/readyz") as response:
                if response.status == 200:
                    return running
            await asyncio.sleep(0.1)
    await running.close()
    raise AssertionError("task-runner never became ready")


@contextlib.asynccontextmanager
async def task_runner(settings: TaskRunnerSettings) -> AsyncIterator[Running]:
    running = await start(settings)
    try:
        yield running
    finally:
        if not running.task.done():
            await running.close()


@dataclass
class Finished:
    """TaskFinished events seen on the test's topics."""

    envelopes: list[events.Envelope[events.TaskFinished]] = field(default_factory=list)

    def for_task(self, name: str) -> list[events.Envelope[events.TaskFinished]]:
        return [e for e in self.envelopes if e.data.task_name == name]

    async def wait_for(self, name: str, timeout: float = 60) -> events.TaskFinished:
        for _ in range(int(timeout * 10)):
            found = self.for_task(name)
            if found:
                return found[0].data
            await asyncio.sleep(0.1)
        raise AssertionError(f"no TaskFinished for {name}")


@contextlib.asynccontextmanager
async def watch_finished(bus_settings: BusSettings) -> AsyncIterator[Finished]:
    await bus.ensure_topics(bus_settings, list(events.Topic))
    seen = Finished()

    async def handle(envelope: events.Envelope[events.TaskFinished], _: bus.Coordinates) -> None:
        seen.envelopes.append(envelope)

    consumer = bus.Consumer(
        bus_settings, group_id=f"observer-{uuid.uuid4().hex[:8]}", client_id="observer"
    )
    consumer.register(events.TaskFinished, handle)
    stop = asyncio.Event()
    runner = asyncio.create_task(consumer.run(stop))
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


async def request(
    bus_settings: BusSettings, namespace: str, task_name: str, *, app: str = "demo"
) -> None:
    async with bus.Publisher(bus_settings, client_id="test-scheduler") as publisher:
        await publisher.publish(
            events.TaskRequested(
                namespace=namespace, app=app, task_name=task_name, phase="WorkloadPreDeployTasks"
            ),
            source="/test",
        )


async def create_definition(
    cluster: k8s.ClusterClient, namespace: str, name: str, spec: Body, **meta: Any
) -> Body:
    body = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": name, **meta},
        "spec": spec,
    }
    return await cluster.create(DEFINITIONS, body, namespace)


async def create_task(
    cluster: k8s.ClusterClient,
    namespace: str,
    name: str,
    definition: str,
    runner_class: str,
    *,
    context: Body | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Body:
    body = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTask",
        "metadata": {
            "name": name,
            "labels": {CLASS_LABEL: runner_class, **(labels or {})},
            "annotations": annotations or {},
        },
        "spec": {
            "taskDefinition": definition,
            "context": context
            or {
                "appName": "demo",
                "appVersion": "",
                "workloadName": "demo-web",
                "workloadVersion": "1.0.0",
                "taskType": "pre",
                "objectType": "Workload",
            },
            **spec,
        },
    }
    return await cluster.create(TASKS, body, namespace)


async def create_secret(cluster: k8s.ClusterClient, namespace: str, name: str, value: str) -> None:
    await cluster.create(
        k8s.SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {"SECURE_DATA": base64.b64encode(value.encode()).decode()},
        },
        namespace,
    )


async def create_configmap(
    cluster: k8s.ClusterClient, namespace: str, name: str, code: str
) -> None:
    await cluster.create(
        k8s.CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"code": code},
        },
        namespace,
    )


async def task_status(cluster: k8s.ClusterClient, namespace: str, name: str) -> Body:
    body = await cluster.get(TASKS, name, namespace)
    status: Body = body.get("status") or {}
    return status


async def wait_status(
    cluster: k8s.ClusterClient,
    namespace: str,
    name: str,
    *,
    until: tuple[str, ...] = ("Succeeded", "Failed"),
    timeout: float = 90,
    check: Any = None,
) -> Body:
    """Poll the task until its status is one of ``until`` (and ``check(status)`` holds)."""
    status: Body = {}
    for _ in range(int(timeout * 5)):
        status = await task_status(cluster, namespace, name)
        if status.get("status") in until and (check is None or check(status)):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {name} never reached {until}: {status}")


async def jobs_of(cluster: k8s.ClusterClient, namespace: str, task: Body) -> list[Body]:
    uid = task["metadata"]["uid"]
    return (await cluster.list(k8s.JOBS, namespace, label_selector=f"{UID_LABEL}={uid}")).items


async def events_of(cluster: k8s.ClusterClient, namespace: str, name: str) -> list[Body]:
    listed = await cluster.list(k8s.EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return listed.items


async def wait_event(
    cluster: k8s.ClusterClient, namespace: str, name: str, reason: str, timeout: float = 30
) -> Body:
    for _ in range(int(timeout * 5)):
        for event in await events_of(cluster, namespace, name):
            if event.get("reason") == reason:
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {reason} event on {name}")
