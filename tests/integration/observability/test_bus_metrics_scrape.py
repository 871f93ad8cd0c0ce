"""Bus metrics on a service's /metrics, from a real consumer and publisher on the real broker.

A service on the template consumes ``task.requested`` events its own publisher sent, one of
which its handler rejects permanently and one it fails once. While the handler is held, the
scraped lag shows every record of the partition as not handled; once released, the lag drains
to 0 and the counters tell each record's outcome.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from observability_kit import Samples, eventually, running, scrape, series, total

from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.clients import bus
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ServiceSettings,
    ShutdownSettings,
)
from klt_common.service import ServiceContext
from klt_common.structs import events

pytestmark = pytest.mark.timeout(120)

TYPE = events.TaskRequested.event_type


async def test_consumed_dead_lettered_handler_times_published_and_lag_are_scraped(
    bus_settings: BusSettings, cluster_settings: ClusterSettings
) -> None:
    settings = ServiceSettings(
        service_name="bus-metrics-test",
        bus=bus_settings.model_copy(
            update={"lag_interval_seconds": 0.1, "handler_retry_delays": (0.05,)}
        ),
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
    )
    group = f"bus-metrics-{uuid.uuid4().hex[:8]}"
    topic = events.TaskRequested.topic.full_name(bus_settings.topic_prefix)
    names = [*(f"task-{n}" for n in range(8)), "poison", "flaky"]
    held = asyncio.Event()
    failed_once: set[str] = set()

    async def setup(context: ServiceContext[ServiceSettings]) -> None:
        async def on_requested(
            envelope: events.Envelope[events.TaskRequested], _where: bus.Coordinates
        ) -> None:
            await held.wait()
            name = envelope.data.task_name
            if name == "poison":
                raise PermanentError("this task cannot run")
            if name == "flaky" and name not in failed_once:
                failed_once.add(name)
                raise TemporaryError("not yet")

        context.consumer(group).register(events.TaskRequested, on_requested)

    async with running(settings, setup) as service:
        try:
            for name in names:
                # One app: one partition, handled in order behind the held first record.
                await service.context.publisher.publish(
                    events.TaskRequested(
                        namespace="shop", app="checkout", task_name=name, phase="AppPreDeployTasks"
                    ),
                    source="/test",
                )

            async def lag_is(expected: int) -> Samples | None:
                samples = await scrape(service.port)
                lag = series(samples, "klt_bus_consumer_lag", group=group, topic=topic)
                # Every partition of the topic is reported once its first fetch came back.
                complete = len(lag) == bus_settings.partitions
                return samples if complete and sum(v for _, v in lag) == expected else None

            held_samples = await eventually(
                lambda: lag_is(len(names)), what="a lag of every record"
            )
            assert total(held_samples, "klt_bus_consumed_total", group=group) == 0
            assert [
                v for _, v in series(held_samples, "klt_bus_consumer_lag", group=group) if v
            ] == [len(names)], "all records of one app are on one partition"

            held.set()
            samples = await eventually(lambda: lag_is(0), what="the lag to drain to 0")

            def consumed(outcome: str) -> float:
                return total(
                    samples,
                    "klt_bus_consumed_total",
                    group=group,
                    topic=topic,
                    type=TYPE,
                    outcome=outcome,
                )

            assert consumed("ok") == len(names) - 2
            assert consumed("retried") == 1
            assert consumed("dead_lettered") == 1
            assert (
                total(
                    samples,
                    "klt_bus_dead_lettered_total",
                    group=group,
                    topic=topic,
                    error="PermanentError",
                )
                == 1
            )
            # One attempt per record, and two for the one that failed once.
            assert (
                total(samples, "klt_bus_handler_seconds_count", group=group, type=TYPE)
                == len(names) + 1
            )
            assert total(samples, "klt_bus_published_total", topic=topic, type=TYPE) == len(names)
            registry = service.registry
        finally:
            held.set()  # a failed assertion must not leave the handler held

    # A member that left the group reports no partitions any more.
    assert not [
        sample
        for family in registry.collect()
        if family.name == "klt_bus_consumer_lag"
        for sample in family.samples
    ]
