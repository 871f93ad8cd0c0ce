"""Helpers for the scheduler integration tests.

The scheduler runs in-process (``serve``) against the real apiserver and Kafka, confined to the
test's namespace and topic prefix, and to a shard of its own: the test namespace carries the
``klt.sh/scheduler-shard`` label, so the stack's own scheduler (which manages the unlabelled
namespaces of the whole cluster) keeps its hands off the test's objects.

The other services are not needed: the tests play their parts. ``Aggregator`` creates app and
workload versions and announces them, as the app-aggregator would; ``Runner`` writes the status
of the KeptnTasks and KeptnEvaluations the scheduler created and announces the result, as the
task-runner and the evaluator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import ServiceContext, serve
from klt_common.structs import discovery, events
from klt_scheduler.app import setup
from klt_scheduler.settings import LifecycleSettings, SchedulerSettings

T = TypeVar("T")

KAV = k8s.keptn_resource("KeptnAppVersion")
KWV = k8s.keptn_resource("KeptnWorkloadVersion")
TASKS = k8s.keptn_resource("KeptnTask")
EVALUATIONS = k8s.keptn_resource("KeptnEvaluation")
TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
EVALUATION_DEFINITIONS = k8s.keptn_resource("KeptnEvaluationDefinition")
CONFIGS = k8s.keptn_resource("KeptnConfig")
APPS = k8s.keptn_resource("KeptnApp")
LIFECYCLE = "lifecycle.keptn.sh/v1"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def scheduler_settings(
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
    namespace: str,
    shard: str,
    **lifecycle: Any,
) -> SchedulerSettings:
    values: dict[str, Any] = {
        "namespace": namespace,
        "shard": shard,
        "resync_seconds": 5.0,
        "retry_delays": (0.2, 0.5, 1.0),
        "consumer_group": f"klt-scheduler-{shard}",
    }
    values.update(lifecycle)
    return SchedulerSettings(
        instance_id=f"test-{uuid.uuid4().hex[:6]}",
        bus=bus_settings,
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
        scheduler=LifecycleSettings(**values),
    )


@dataclass
class RunningScheduler:
    settings: SchedulerSettings
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    stop: asyncio.Event
    task: asyncio.Task[None]
    context: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans.get_finished_spans()]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def start_scheduler(settings: SchedulerSettings) -> RunningScheduler:
    stop = asyncio.Event()
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    holder: dict[str, Any] = {}

    async def wrapped(context: ServiceContext[SchedulerSettings]) -> None:
        holder["context"] = context
        await setup(context)

    task = asyncio.create_task(
        serve(
            settings,
            wrapped,
            stop=stop,
            registry=registry,
            tracer_provider=provider,
            on_ready=lambda port: ready.done() or ready.set_result(port),
        ),
        name="scheduler-under-test",
    )
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    if ready not in done:
        raise AssertionError("the scheduler did not start")
    running = RunningScheduler(settings, registry, exporter, stop, task, holder)
    context = holder["context"]

    async def ready_probe() -> bool:
        results = await context.readiness.evaluate()
        return all(results.values())

    await eventually(ready_probe, timeout=30, what="scheduler readiness")
    return running


@contextlib.asynccontextmanager
async def running_scheduler(settings: SchedulerSettings) -> AsyncIterator[RunningScheduler]:
    scheduler = await start_scheduler(settings)
    try:
        yield scheduler
    finally:
        if not scheduler.task.done():
            await scheduler.halt()


# --------------------------------------------------------------------------------------------
# Objects


# Labels that keep the stack's own task-runner and evaluator (which serve the unlabelled
# objects) away from the checks of these tests: KeptnTasks inherit their definition's labels,
# and so do the scheduler's KeptnEvaluations.
RUNNER_CLASS = {"klt.dev/runner-class": "scheduler-tests"}
EVALUATOR_SHARD = {"evaluator.klt.sh/shard": "scheduler-tests"}


def task_definition(name: str) -> dict[str, Any]:
    # An image the node agent does not run, should a task-runner pick the task up after all.
    return {
        "apiVersion": LIFECYCLE,
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": name, "labels": {"team": "checks", **RUNNER_CLASS}},
        "spec": {
            "container": {"name": "check", "image": "klt.test/never-runs:1"},
            "retries": 2,
            "timeout": "1m",
        },
    }


def evaluation_definition(name: str) -> dict[str, Any]:
    return {
        "apiVersion": LIFECYCLE,
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": name, "labels": dict(EVALUATOR_SHARD)},
        "spec": {
            "objectives": [{"keptnMetricRef": {"name": "ready"}, "evaluationTarget": ">0"}],
            "retries": 3,
            "retryInterval": "2s",
        },
    }


def keptn_config(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "options.keptn.sh/v1alpha1",
        "kind": "KeptnConfig",
        "metadata": {"name": f"config-{uuid.uuid4().hex[:6]}"},
        "spec": spec,
    }


def gated_template(
    labels: dict[str, str], *, gated: bool = True, **pod_spec: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "web", "image": "nginx:1.27"}],
        "terminationGracePeriodSeconds": 0,
        **pod_spec,
    }
    if gated:
        spec["schedulingGates"] = [{"name": discovery.SCHEDULING_GATE}]
    return {"metadata": {"labels": labels}, "spec": spec}


def replicaset(name: str, *, replicas: int = 1, **template: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": gated_template(labels, **template),
        },
    }


def statefulset(name: str, *, replicas: int = 1, **template: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": gated_template(labels, **template),
        },
    }


def daemonset(name: str, **template: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": gated_template(labels, **template),
        },
    }


# --------------------------------------------------------------------------------------------
# Playing the other services


@dataclass
class Workload:
    """A workload of the app: its KeptnWorkloadVersion and the object it stands for."""

    name: str
    version: str
    kind: str
    obj: dict[str, Any]
    pre_tasks: list[str] = field(default_factory=list)
    post_tasks: list[str] = field(default_factory=list)
    pre_evaluations: list[str] = field(default_factory=list)
    post_evaluations: list[str] = field(default_factory=list)


@dataclass
class Aggregator:
    """Creates app and workload versions and announces them, as the app-aggregator does."""

    cluster: k8s.ClusterClient
    bus_settings: BusSettings
    namespace: str
    publisher: bus.Publisher

    def kwv_name(self, app: str, workload: Workload) -> str:
        return discovery.create_resource_name(app, workload.name, workload.version)

    async def create_app_version(
        self,
        app: str,
        version: str,
        workloads: list[Workload],
        *,
        generation: int = 1,
        announce: bool = True,
        **checks: Any,
    ) -> str:
        name = discovery.app_version_name(app, version, generation)
        spec: dict[str, Any] = {
            "appName": app,
            "version": version,
            "revision": generation,
            "workloads": [{"name": w.name, "version": w.version} for w in workloads],
        }
        spec.update({k: v for k, v in checks.items() if v is not None})
        await self.cluster.create(
            KAV,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnAppVersion",
                "metadata": {"name": name},
                "spec": spec,
            },
            self.namespace,
        )
        if announce:
            await self.publisher.publish(
                events.AppVersionCreated(
                    namespace=self.namespace,
                    app=app,
                    app_version_name=name,
                    version=version,
                    revision=generation,
                    generation=generation,
                ),
                source="/test/aggregator",
            )
        return name

    async def create_workload_version(
        self, app: str, workload: Workload, *, announce: bool = True
    ) -> str:
        name = self.kwv_name(app, workload)
        spec: dict[str, Any] = {
            "app": app,
            "version": workload.version,
            "workloadName": f"{app}-{workload.name}",
            "resourceReference": {
                "uid": workload.obj["metadata"]["uid"],
                "kind": workload.kind,
                "name": workload.obj["metadata"]["name"],
            },
        }
        checks = {
            "preDeploymentTasks": workload.pre_tasks,
            "postDeploymentTasks": workload.post_tasks,
            "preDeploymentEvaluations": workload.pre_evaluations,
            "postDeploymentEvaluations": workload.post_evaluations,
        }
        spec.update({key: value for key, value in checks.items() if value})
        await self.cluster.create(
            KWV,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnWorkloadVersion",
                "metadata": {"name": name},
                "spec": spec,
            },
            self.namespace,
        )
        if announce:
            await self.publisher.publish(
                events.WorkloadVersionCreated(
                    namespace=self.namespace,
                    app=app,
                    workload=f"{app}-{workload.name}",
                    workload_version_name=name,
                    version=workload.version,
                ),
                source="/test/aggregator",
            )
        return name


@dataclass
class Runner:
    """Finishes KeptnTasks and KeptnEvaluations, as the task-runner and evaluator do."""

    cluster: k8s.ClusterClient
    namespace: str
    publisher: bus.Publisher

    async def finish_task(
        self, name: str, state: str = "Succeeded", *, announce: bool = True
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            obj["status"] = {
                "status": state,
                "startTime": now,
                "endTime": now,
                **(
                    {"message": "exit code 1", "reason": "BackoffLimitExceeded"}
                    if state == "Failed"
                    else {}
                ),
            }
            return obj

        await self.cluster.update(TASKS, name, self.namespace, mutate, subresource="status")
        if announce:
            task = await self.cluster.get(TASKS, name, self.namespace)
            context = task["spec"].get("context") or {}
            await self.publisher.publish(
                events.TaskFinished(
                    namespace=self.namespace,
                    app=context.get("appName") or "unknown",
                    task_name=name,
                    state=events.State(state),
                ),
                source="/test/task-runner",
            )

    async def finish_evaluation(
        self, name: str, state: str = "Succeeded", *, announce: bool = True
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            obj["status"] = {
                "retryCount": 1,
                "overallStatus": state,
                "evaluationStatus": {
                    "ready": {
                        "value": "1" if state == "Succeeded" else "0",
                        "status": state,
                        "message": "value '0' did not meet objective '>0'"
                        if state == "Failed"
                        else "value '1' met objective '>0'",
                    }
                },
                "startTime": now,
                "endTime": now,
            }
            return obj

        await self.cluster.update(EVALUATIONS, name, self.namespace, mutate, subresource="status")
        if announce:
            evaluation = await self.cluster.get(EVALUATIONS, name, self.namespace)
            await self.publisher.publish(
                events.EvaluationFinished(
                    namespace=self.namespace,
                    app=evaluation["spec"].get("appName") or "unknown",
                    evaluation_name=name,
                    state=events.State(state),
                ),
                source="/test/evaluator",
            )


@contextlib.asynccontextmanager
async def auto_runner(
    runner: Runner, verdicts: dict[str, str], *, announce: bool = True
) -> AsyncIterator[set[str]]:
    """Finish every KeptnTask/KeptnEvaluation of a definition in ``verdicts`` with its verdict.

    Definitions not in ``verdicts`` are left running. Yields the names finished so far.
    """
    finished: set[str] = set()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            for res, key in ((TASKS, "taskDefinition"), (EVALUATIONS, "evaluationDefinition")):
                listed = await runner.cluster.list(res, runner.namespace)
                for item in listed.items:
                    name = item["metadata"]["name"]
                    verdict = verdicts.get(item["spec"].get(key, ""))
                    if verdict is None or name in finished:
                        continue
                    finished.add(name)
                    if res is TASKS:
                        await runner.finish_task(name, verdict, announce=announce)
                    else:
                        await runner.finish_evaluation(name, verdict, announce=announce)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    task = asyncio.create_task(loop(), name="auto-runner")
    try:
        yield finished
    finally:
        stop.set()
        await task


# --------------------------------------------------------------------------------------------
# Reading what happened


async def get_status(
    cluster: k8s.ClusterClient, res: k8s.Resource, name: str, ns: str
) -> dict[str, Any]:
    obj = await cluster.get(res, name, ns)
    return dict(obj.get("status") or {})


async def wait_status(
    cluster: k8s.ClusterClient,
    res: k8s.Resource,
    name: str,
    namespace: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 30,
    what: str = "",
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await get_status(cluster, res, name, namespace)
        return status if predicate(status) else None

    return await eventually(probe, timeout=timeout, what=what or f"{res.kind} {name} status")


async def checks_of(
    cluster: k8s.ClusterClient, res: k8s.Resource, namespace: str, owner: str
) -> list[dict[str, Any]]:
    """The KeptnTasks or KeptnEvaluations owned by the version named ``owner``."""
    listed = await cluster.list(res, namespace)
    return [
        item
        for item in listed.items
        if any(o.get("name") == owner for o in item["metadata"].get("ownerReferences") or [])
    ]


async def wait_check(
    cluster: k8s.ClusterClient,
    res: k8s.Resource,
    namespace: str,
    owner: str,
    definition: str,
    *,
    check_type: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    key = "taskDefinition" if res.kind == "KeptnTask" else "evaluationDefinition"

    async def probe() -> dict[str, Any] | None:
        for item in await checks_of(cluster, res, namespace, owner):
            if item["spec"].get(key) == definition and (
                check_type is None or item["spec"].get("checkType") == check_type
            ):
                return item
        return None

    return await eventually(probe, timeout=timeout, what=f"{res.kind} for {definition} of {owner}")


async def events_of(cluster: k8s.ClusterClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await cluster.list(k8s.EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return listed.items


async def reasons_of(cluster: k8s.ClusterClient, namespace: str, name: str) -> set[str]:
    return {str(e.get("reason")) for e in await events_of(cluster, namespace, name)}


def gates_of(pod: dict[str, Any]) -> list[str]:
    return [g.get("name", "") for g in pod.get("spec", {}).get("schedulingGates") or []]


async def pods_of(
    cluster: k8s.ClusterClient, namespace: str, owner_uid: str
) -> list[dict[str, Any]]:
    listed = await cluster.list(k8s.PODS, namespace)
    return [
        p
        for p in listed.items
        if any(o.get("uid") == owner_uid for o in p["metadata"].get("ownerReferences") or [])
    ]


async def read_phase_changes(
    bootstrap: str,
    topic_prefix: str,
    *,
    until: Callable[[list[events.PhaseChanged]], bool],
    timeout: float = 20,
) -> list[events.PhaseChanged]:
    """Every PhaseChanged on the test's lifecycle topic, from the start, until ``until``."""
    from aiokafka import AIOKafkaConsumer

    topic = events.Topic.LIFECYCLE.full_name(topic_prefix)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    seen: list[events.PhaseChanged] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(seen):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    envelope = events.decode(record.value, record.headers)
                    if isinstance(envelope.data, events.PhaseChanged):
                        seen.append(envelope.data)
    finally:
        await consumer.stop()
    return seen
