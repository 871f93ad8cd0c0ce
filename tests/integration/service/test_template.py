"""The service template end to end: a service built on it consumes real events, keeps a watch
cache, answers its probes, and on stop drains and commits so that a restart replays nothing.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ServiceSettings,
    ShutdownSettings,
)
from klt_common.service import ServiceContext, serve
from klt_common.structs import events


def _settings(bus_settings: BusSettings, cluster_settings: ClusterSettings) -> ServiceSettings:
    return ServiceSettings(
        service_name="template-test",
        bus=bus_settings,
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
    )


def _finished(namespace: str, n: int) -> events.TaskFinished:
    return events.TaskFinished(
        namespace=namespace, app="demo", task_name=f"task-{n}", state=events.State.SUCCEEDED
    )


async def _run_service(
    settings: ServiceSettings, namespace: str, group: str, seen: list[str]
) -> tuple[asyncio.Task[None], asyncio.Event, asyncio.Future[int], CollectorRegistry]:
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    registry = CollectorRegistry()
    handled = Counter("handled_events", "events handled by the test service", registry=registry)

    async def setup(context: ServiceContext[ServiceSettings]) -> None:
        cache = context.watch(k8s.WatchCache(context.cluster, k8s.CONFIGMAPS, namespace=namespace))
        consumer = context.consumer(group)

        async def on_finished(
            envelope: events.Envelope[events.TaskFinished], _where: bus.Coordinates
        ) -> None:
            seen.append(envelope.data.task_name)
            handled.inc()
            assert cache.synced

        consumer.register(events.TaskFinished, on_finished)

    task = asyncio.create_task(
        serve(settings, setup, stop=stop, registry=registry, on_ready=port.set_result)
    )
    return task, stop, port, registry


async def test_a_service_consumes_serves_probes_and_commits_on_stop(
    bus_settings: BusSettings, cluster_settings: ClusterSettings, namespace: str
) -> None:
    settings = _settings(bus_settings, cluster_settings)
    group = f"template-{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics(bus_settings, [events.Topic.LIFECYCLE, events.Topic.DEADLETTER])
    seen: list[str] = []
    task, stop, port_future, _ = await _run_service(settings, namespace, group, seen)
    port = await asyncio.wait_for(port_future, 30)
    async with bus.Publisher(bus_settings, client_id="template-test") as publisher:
        for n in range(5):
            await publisher.publish(_finished(namespace, n), source="/test")
        for _ in range(300):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.1)
        assert sorted(seen) == [f"task-{n}" for n in range(5)]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
                assert (await response.json()) == {"cache:configmaps": True}
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "handled_events_total 5.0" in await response.text()
        stop.set()
        await asyncio.wait_for(task, 30)

        # A second incarnation of the same group must resume after what was committed.
        for n in range(5, 7):
            await publisher.publish(_finished(namespace, n), source="/test")
        seen_again: list[str] = []
        task, stop, port_future, _ = await _run_service(settings, namespace, group, seen_again)
        for _ in range(300):
            if len(seen_again) == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.wait_for(task, 30)
    assert sorted(seen_again) == ["task-5", "task-6"]
