"""Helpers for the job executor's integration tests: run the task-runner's job executor
in-process, publish Keptn events to its input topic, and read what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from klt_common.clients import bus, raw_bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import ServiceContext, serve
from klt_common.structs import events
from klt_task_runner import jobexecutor
from klt_task_runner.jobexecutor.settings import JobExecutorSettings
from klt_task_runner.settings import TaskRunnerSettings

INPUT = "keptn.in"
OUTPUT = "keptn.out"
PROJECT, STAGE, SERVICE = "sockshop", "dev", "carts"


def settings_for(
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
    namespace: str,
    **job_executor: Any,
) -> TaskRunnerSettings:
    options: dict[str, Any] = {
        "enabled": True,
        "input_topic": INPUT,
        "output_topic": OUTPUT,
        "consumer_group": f"jes-{uuid.uuid4().hex[:10]}",
        "config_namespace": namespace,
        "job_namespace": namespace,
        "allowed_images": ("busybox*", "alpine*", "python*"),
        "max_poll_duration": 90,
        "ttl_seconds_after_finished": 600,
    }
    options.update(job_executor)
    return TaskRunnerSettings(
        bus=bus_settings.model_copy(update={"drain_grace_seconds": 2.0}),
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=10),
        job_executor=JobExecutorSettings(**options),
    )


async def _setup(context: ServiceContext[TaskRunnerSettings]) -> None:
    jobexecutor.attach(context)


@contextlib.asynccontextmanager
async def running(settings: TaskRunnerSettings) -> AsyncIterator[None]:
    """The job executor (and nothing else of the task-runner) served in-process."""
    await bus.ensure_topics(settings.bus, [INPUT, OUTPUT, *events.Topic])
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, _setup, stop=stop, on_ready=ready.set_result))
    try:
        waited: set[asyncio.Future[Any]] = {task, ready}
        done, _ = await asyncio.wait(waited, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def keptn_event(
    event_type: str = "sh.keptn.event.test.triggered",
    *,
    event_id: str | None = None,
    context: str | None = None,
    project: str = PROJECT,
    **data: Any,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "shipyard-controller",
        "type": event_type,
        "time": "2025-01-02T03:04:05.000Z",
        "datacontenttype": "application/json",
        "shkeptncontext": context or str(uuid.uuid4()),
        "shkeptnspecversion": "0.2.4",
        "data": {"project": project, "stage": STAGE, "service": SERVICE, **data},
    }


async def publish(bus_settings: BusSettings, *bodies: dict[str, Any]) -> None:
    async with bus.Publisher(bus_settings, client_id="jes-test") as publisher:
        raw = raw_bus.RawPublisher(publisher, bus_settings)
        for body in bodies:
            await raw.publish(
                INPUT,
                json.dumps(body).encode(),
                key=body["shkeptncontext"],
                headers=[("content-type", b"application/cloudevents+json")],
            )


async def configure(
    cluster: k8s.ClusterClient,
    namespace: str,
    job_config: dict[str, Any] | str,
    *,
    files: dict[str, str] | None = None,
    name: str = "job-config",
    **levels: str,
) -> None:
    """A job-configuration ConfigMap; ``levels`` adds ``stage``/``service`` labels."""
    text = job_config if isinstance(job_config, str) else yaml.safe_dump(job_config)
    labels = {"klt.dev/job-config": "true", "keptn.sh/project": PROJECT}
    labels.update({f"keptn.sh/{level}": value for level, value in levels.items()})
    await cluster.create(
        k8s.CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels},
            "data": {"config.yaml": text, **(files or {})},
        },
        namespace,
    )


def shell_task(name: str, script: str, image: str = "busybox:1.36", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "cmd": ["sh"], "args": ["-c", script], **extra}


def action(
    name: str,
    tasks: list[dict[str, Any]],
    event: str = "sh.keptn.event.test.triggered",
    **extra: Any,
) -> dict[str, Any]:
    return {"name": name, "events": [{"name": event}], "tasks": tasks, **extra}


def v2(*actions: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v2", "actions": list(actions)}


@dataclass
class Outbox:
    """Everything the job executor publishes, collected in the background."""

    records: list[Any] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records]

    def replies_to(self, event_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("triggeredid") == event_id]

    async def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], *, timeout: float, what: str
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not condition(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}: {self.events}"
                )
            await asyncio.sleep(0.1)
        return self.events

    async def finished(self, event_id: str, *, timeout: float = 120) -> dict[str, Any]:
        def done(_: list[dict[str, Any]]) -> bool:
            return any(e["type"].endswith(".finished") for e in self.replies_to(event_id))

        await self.wait_for(done, timeout=timeout, what=f"the .finished of {event_id}")
        return next(e for e in self.replies_to(event_id) if e["type"].endswith(".finished"))


async def partitions_of(bus_settings: BusSettings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bus_settings.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def read_all(bus_settings: BusSettings, topic: str) -> list[Any]:
    """Every record of ``topic`` (full name), from the beginning to its current end."""
    partitions = await partitions_of(bus_settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bus_settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def outbox(bus_settings: BusSettings) -> AsyncIterator[Outbox]:
    topic = f"{bus_settings.topic_prefix}{OUTPUT}"
    await bus.ensure_topics(bus_settings, [OUTPUT])
    box = Outbox()
    tps = await partitions_of(bus_settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bus_settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)

    async def collect() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                box.records.extend(records)

    task = asyncio.create_task(collect())
    try:
        yield box
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


async def jobs_of(
    cluster: k8s.ClusterClient, namespace: str, event_id: str
) -> list[dict[str, Any]]:
    listed = await cluster.list(k8s.JOBS, namespace, label_selector=f"keptn.sh/event-id={event_id}")
    return sorted(listed.items, key=lambda j: j["metadata"]["name"])
