"""The bus against a real broker: typed delivery, ordering, dead letters, retries, commits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from bus_testkit import (
    committed_offsets,
    end_offsets,
    header,
    read_topic,
    running,
    wait_for,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.clients import bus
from klt_common.configs.settings import BusSettings
from klt_common.structs import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SOURCE = "/klt/test"


@pytest.fixture
def settings(bus_settings: BusSettings) -> BusSettings:
    """The shared per-test settings (own topic prefix), with quick retries and drains."""
    return bus_settings.model_copy(
        update={
            "handler_retry_delays": (0.05, 0.05, 0.05),
            "connect_retry_delays": (0.5, 1.0),
            "drain_grace_seconds": 3.0,
        }
    )


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def publisher(settings: BusSettings) -> Any:
    await bus.ensure_topics(settings, list(events.Topic))
    async with bus.Publisher(settings, client_id="test-publisher") as publisher:
        yield publisher


def task(app: str, n: int, **extra: Any) -> events.TaskRequested:
    return events.TaskRequested(
        namespace="shop", app=app, task_name=f"task-{n}", phase="AppPreDeployTasks", **extra
    )


def samples() -> list[events.EventPayload]:
    """One event of every catalogue type, all of one app."""
    ns, app = "shop", "checkout"
    return [
        events.PodAdmitted(
            namespace=ns,
            app=app,
            pod_name="checkout-abc",
            pod_uid="",
            owner=events.OwnerRef(kind="ReplicaSet", name="rs", uid="u", api_version="apps/v1"),
            workload="checkout-web",
            version="1.0",
            app_type_single_service=False,
            pre_deployment_tasks=("notify",),
            metadata={"team": "payments"},
            admitted_at=datetime.now(UTC),
        ),
        events.AppVersionCreated(
            namespace=ns, app=app, app_version_name="checkout-1.0-abc", version="1.0", generation=1
        ),
        events.WorkloadVersionCreated(
            namespace=ns,
            app=app,
            workload="checkout-web",
            workload_version_name="checkout-web-1.0",
            version="1.0",
        ),
        events.TaskRequested(namespace=ns, app=app, task_name="t1", phase="AppPreDeployTasks"),
        events.TaskFinished(
            namespace=ns, app=app, task_name="t1", state=events.State.SUCCEEDED, message="ok"
        ),
        events.EvaluationRequested(
            namespace=ns, app=app, evaluation_name="e1", phase="AppPreDeployEvaluations"
        ),
        events.EvaluationFinished(
            namespace=ns, app=app, evaluation_name="e1", state=events.State.FAILED, message="slow"
        ),
        events.PhaseChanged(
            namespace=ns,
            app=app,
            object_kind="KeptnAppVersion",
            object_name="checkout-1.0-abc",
            phase="AppPreDeployTasks",
            state=events.State.PROGRESSING,
        ),
    ]


# --------------------------------------------------------------------------------------------
# (a) Typed events travel through the broker and are decoded.


async def test_every_event_type_round_trips_through_kafka(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    received: dict[str, tuple[events.Envelope[Any], bus.Coordinates, str | None]] = {}

    async def record(event: events.Envelope[Any], where: bus.Coordinates) -> None:
        span = trace.get_current_span().get_span_context()
        received[event.id] = (
            event,
            where,
            format(span.trace_id, "032x") if span.is_valid else None,
        )

    consumer = bus.Consumer(settings, group_id=group_id, client_id="test")
    for spec in events.CATALOGUE.values():
        consumer.register(spec.model, record)

    tracer = TracerProvider().get_tracer("test")
    published: list[tuple[events.Envelope[Any], str]] = []
    with tracer.start_as_current_span("publish") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        for payload in samples():
            envelope = await publisher.publish(payload, source=SOURCE)
            published.append((envelope, trace_id))

    async with running(consumer):
        await wait_for(lambda: len(received) == len(published), timeout=20, what="all events")

    partitions = set()
    for envelope, expected_trace in published:
        got, where, trace_id_seen = received[envelope.id]
        assert got == envelope
        assert type(got.data) is type(envelope.data)
        assert where.topic == envelope.data.topic.full_name(settings.topic_prefix)
        assert trace_id_seen == expected_trace, "trace context did not travel in the headers"
        partitions.add(where.partition)
    # One app, one key: the same partition in every topic (same partition count, same hash).
    assert len(partitions) == 1


async def test_one_apps_events_arrive_in_order_and_apps_run_in_parallel(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    apps = [f"app-{i}" for i in range(6)]
    seen: dict[str, list[int]] = {app: [] for app in apps}
    active = 0
    max_active = 0

    async def handle(event: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(0.01)
        seen[event.data.app].append(int(event.data.task_name.split("-")[1]))
        active -= 1

    for n in range(30):
        for app in apps:
            await publisher.publish(task(app, n), source=SOURCE)

    consumer = bus.Consumer(settings, group_id=group_id, client_id="test")
    consumer.register(events.TaskRequested, handle)
    async with running(consumer):
        await wait_for(lambda: sum(map(len, seen.values())) == 180, timeout=30, what="180 events")
    assert all(order == list(range(30)) for order in seen.values()), seen
    assert max_active > 1, "partitions were not handled concurrently"


# --------------------------------------------------------------------------------------------
# (c) Permanent failures, undecodable records and unknown types do not block a partition.


async def test_bad_records_go_to_the_dead_letter_topic_and_the_partition_moves_on(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    handled: list[str] = []
    attempts: Counter[str] = Counter()

    async def handle(event: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
        attempts[event.data.task_name] += 1
        if event.data.task_name == "task-2":
            raise PermanentError("task-2 is a poison pill")
        handled.append(event.data.task_name)

    # All on one partition (one key), in this order: good, garbage, unknown type, poison, good.
    first = await publisher.publish(task("shop-app", 1), source=SOURCE)
    topic = events.Topic.TASKS.full_name(settings.topic_prefix)
    key = first.partitionkey.encode()
    future_event = json.loads(events.encode(first)[0])
    future_event.update(id="future-1", type="sh.klt.teleport.requested", data={"x": 1})
    raw = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await raw.start()
    try:
        await raw.send_and_wait(topic, key=key, value=b"\x00 definitely not json")
        await raw.send_and_wait(
            topic,
            key=key,
            value=json.dumps(future_event).encode(),
            headers=[("content-type", b"application/cloudevents+json")],
        )
    finally:
        await raw.stop()
    poison = await publisher.publish(task("shop-app", 2), source=SOURCE)
    await publisher.publish(task("shop-app", 3), source=SOURCE)

    consumer = bus.Consumer(settings, group_id=group_id, client_id="test")
    consumer.register(events.TaskRequested, handle)
    async with running(consumer):
        await wait_for(lambda: handled == ["task-1", "task-3"], timeout=20, what="good events")

    assert attempts["task-2"] == 1, "a permanent error must not be retried"
    dead_topic = events.Topic.DEADLETTER.full_name(settings.topic_prefix)
    garbage, dead_poison = sorted(
        await read_topic(settings.bootstrap_servers, dead_topic, count=2),
        key=lambda r: int(header(r, bus.DLQ_ORIGINAL_OFFSET)),
    )
    assert garbage.value == b"\x00 definitely not json"
    assert garbage.key == key
    assert header(garbage, bus.DLQ_ORIGINAL_TOPIC) == topic
    assert header(garbage, bus.DLQ_ORIGINAL_OFFSET) == "1"
    assert header(garbage, bus.DLQ_ERROR_TYPE).endswith("MalformedEventError")
    # The group is named under the installation's prefix, like the topics.
    assert header(garbage, bus.DLQ_CONSUMER_GROUP) == f"{settings.topic_prefix}{group_id}"

    assert json.loads(dead_poison.value)["id"] == poison.id
    assert header(dead_poison, bus.DLQ_ORIGINAL_OFFSET) == "3"
    assert header(dead_poison, bus.DLQ_ERROR_TYPE) == "klt_common.aiokits.errors.PermanentError"
    assert header(dead_poison, bus.DLQ_ERROR_MESSAGE) == "task-2 is a poison pill"
    assert header(dead_poison, "content-type") == "application/cloudevents+json"
    assert header(dead_poison, bus.DLQ_ORIGINAL_PARTITION) == header(
        garbage, bus.DLQ_ORIGINAL_PARTITION
    )

    # Everything, the skipped unknown type included, is committed: nothing would be replayed.
    committed = await committed_offsets(
        settings.bootstrap_servers, f"{settings.topic_prefix}{group_id}", topic
    )
    ends = await end_offsets(settings.bootstrap_servers, topic)
    assert {p: o for p, o in committed.items() if o is not None} == {
        p: o for p, o in ends.items() if o
    }


# --------------------------------------------------------------------------------------------
# (d) Temporary failures are retried; exhausted retries dead-letter.


async def test_temporary_errors_are_retried_until_they_succeed_or_run_out(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    attempts: Counter[str] = Counter()
    handled: list[str] = []

    async def flaky(event: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
        name = event.data.task_name
        attempts[name] += 1
        if name == "task-1" and attempts[name] <= 2:
            raise TemporaryError("the apiserver is restarting")
        if name == "task-2":
            raise TemporaryError("never going to work")
        if name == "task-3" and attempts[name] == 1:
            raise ConnectionResetError("some library dropped its connection")
        handled.append(name)

    for n in (1, 2, 3):
        await publisher.publish(task("shop-app", n), source=SOURCE)
    consumer = bus.Consumer(settings, group_id=group_id, client_id="test")
    consumer.register(events.TaskRequested, flaky)
    async with running(consumer):
        await wait_for(lambda: handled == ["task-1", "task-3"], timeout=20, what="retries")

    assert attempts == {"task-1": 3, "task-2": 4, "task-3": 2}  # 3 delays: 4 attempts at most
    dead_topic = events.Topic.DEADLETTER.full_name(settings.topic_prefix)
    [dead] = await read_topic(settings.bootstrap_servers, dead_topic, count=1)
    assert header(dead, bus.DLQ_ERROR_TYPE) == "klt_common.aiokits.errors.TemporaryError"
    assert header(dead, bus.DLQ_ERROR_MESSAGE) == "never going to work"


# --------------------------------------------------------------------------------------------
# (e) A graceful stop drains and commits: the next member replays nothing.


async def test_graceful_stop_drains_in_flight_work_and_commits(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    handled: list[str] = []
    slow_started = asyncio.Event()

    async def handle(event: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
        if event.data.task_name == "task-slow":
            slow_started.set()
            await asyncio.sleep(0.5)  # still running when the stop comes
        handled.append(event.id)

    published = [
        (await publisher.publish(task(f"app-{n % 5}", n), source=SOURCE)).id for n in range(40)
    ]
    consumer = bus.Consumer(settings, group_id=group_id, client_id="first")
    consumer.register(events.TaskRequested, handle)
    async with running(consumer) as stop:
        await wait_for(lambda: len(handled) == 40, timeout=20, what="first 40 events")
        slow = await publisher.publish(
            events.TaskRequested(namespace="shop", app="app-0", task_name="task-slow", phase="X"),
            source=SOURCE,
        )
        await asyncio.wait_for(slow_started.wait(), 10)
        stop.set()  # mid-handler: the consumer must finish it, then commit
    assert handled[-1] == slow.id, "the in-flight handler did not finish before the stop"
    assert sorted(handled[:40]) == sorted(published)

    topic = events.Topic.TASKS.full_name(settings.topic_prefix)
    committed = await committed_offsets(
        settings.bootstrap_servers, f"{settings.topic_prefix}{group_id}", topic
    )
    assert committed == await end_offsets(settings.bootstrap_servers, topic)

    # A new member of the same group starts after the committed offsets: only new events.
    handled.clear()
    late = await publisher.publish(task("app-1", 99), source=SOURCE)
    successor = bus.Consumer(settings, group_id=group_id, client_id="second")
    successor.register(events.TaskRequested, handle)
    async with running(successor):
        await wait_for(lambda: late.id in handled, timeout=20, what="the late event")
        await asyncio.sleep(0.5)  # room for a replay to show up, if there were one
    assert handled == [late.id]


# --------------------------------------------------------------------------------------------
# Rebalances: partitions change hands gracefully without a single redelivery.


async def test_graceful_rebalances_redeliver_nothing(
    settings: BusSettings, publisher: bus.Publisher, group_id: str
) -> None:
    handled: Counter[str] = Counter()
    by_member: Counter[str] = Counter()

    def handler(member: str) -> bus.Handler[events.TaskRequested]:
        async def handle(event: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
            await asyncio.sleep(0.005)
            handled[event.id] += 1
            by_member[member] += 1

        return handle

    def member(name: str) -> bus.Consumer:
        consumer = bus.Consumer(settings, group_id=group_id, client_id=name)
        consumer.register(events.TaskRequested, handler(name))
        return consumer

    published: list[str] = []

    async def publish(count: int, *, until: Callable[[], bool] | None = None) -> None:
        # With ``until``, keep publishing until it holds: a rebalance takes a heartbeat or two,
        # and the stream must still be flowing when it completes.
        sent = 0
        while (until is None and sent < count) or (until is not None and not until()):
            assert sent < count, "gave up publishing before the condition held"
            n = len(published)
            envelope = await publisher.publish(task(f"app-{n % 12}", n), source=SOURCE)
            published.append(envelope.id)
            sent += 1
            await asyncio.sleep(0.003)

    async with running(member("a")):
        await publish(50)
        async with running(member("b")):  # joins mid-stream: a gives up partitions to it
            await publish(3000, until=lambda: by_member["b"] >= 20)
        await publish(50)  # b left gracefully: a takes everything back
        await wait_for(lambda: len(handled) == len(published), timeout=30, what="every event")

    assert set(handled) == set(published)
    assert all(count == 1 for count in handled.values()), "a graceful rebalance redelivered"


# --------------------------------------------------------------------------------------------
# Start-up.


async def test_ensure_topics_is_idempotent_and_safe_to_race(settings: BusSettings) -> None:
    wanted = [events.Topic.TASKS, events.Topic.DEADLETTER]
    await asyncio.gather(*(bus.ensure_topics(settings, wanted) for _ in range(3)))
    await bus.ensure_topics(settings, wanted)
    for topic in wanted:
        offsets = await end_offsets(
            settings.bootstrap_servers, topic.full_name(settings.topic_prefix)
        )
        assert len(offsets) == settings.partitions


async def test_unreachable_brokers_are_a_temporary_error_unless_stopping() -> None:
    nowhere = BusSettings(bootstrap_servers="127.0.0.1:1", connect_retry_delays=(0.05,))
    consumer = bus.Consumer(nowhere, group_id="g", client_id="test")
    consumer.register(events.TaskRequested, lambda event, where: asyncio.sleep(0))
    with pytest.raises(TemporaryError, match=r"connecting to 127\.0\.0\.1:1"):
        await consumer.run(asyncio.Event())
    with pytest.raises(TemporaryError):
        await bus.ensure_topics(nowhere, [events.Topic.TASKS])

    stopped = asyncio.Event()
    stopped.set()
    patient = nowhere.model_copy(update={"connect_retry_delays": (30.0,)})
    consumer = bus.Consumer(patient, group_id="g", client_id="test")
    consumer.register(events.TaskRequested, lambda event, where: asyncio.sleep(0))
    await asyncio.wait_for(consumer.run(stopped), 5)  # a stop ends the waiting, quietly
