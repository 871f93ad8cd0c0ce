"""Fixtures for the scheduler tests (see scheduler_kit)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from scheduler_kit import (
    Aggregator,
    Runner,
    RunningScheduler,
    running_scheduler,
    scheduler_settings,
)

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events
from klt_scheduler.settings import SHARD_LABEL, SchedulerSettings


@pytest.fixture
def shard() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def namespace(namespace_factory: Callable[..., Awaitable[str]], shard: str) -> str:
    """A fresh namespace that belongs to this test's scheduler shard only."""
    return await namespace_factory({SHARD_LABEL: shard})


@pytest.fixture
async def publisher(bus_settings: BusSettings) -> AsyncIterator[bus.Publisher]:
    await bus.ensure_topics(bus_settings, list(events.Topic))
    async with bus.Publisher(bus_settings, client_id="scheduler-test") as publisher:
        yield publisher


@pytest.fixture
def aggregator(
    cluster: k8s.ClusterClient, bus_settings: BusSettings, namespace: str, publisher: bus.Publisher
) -> Aggregator:
    return Aggregator(cluster, bus_settings, namespace, publisher)


@pytest.fixture
def runner(cluster: k8s.ClusterClient, namespace: str, publisher: bus.Publisher) -> Runner:
    return Runner(cluster, namespace, publisher)


@pytest.fixture
def settings(
    bus_settings: BusSettings, cluster_settings: ClusterSettings, namespace: str, shard: str
) -> SchedulerSettings:
    return scheduler_settings(bus_settings, cluster_settings, namespace, shard)


@pytest.fixture
async def scheduler(settings: SchedulerSettings) -> AsyncIterator[RunningScheduler]:
    async with running_scheduler(settings) as running:
        yield running
